package config

import (
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Redacted replaces secret values in WriteTOML's output.
const Redacted = "<redacted>"

// secretKeys are never printed.
var secretKeys = map[string]bool{"control.token": true}

// WriteTOML prints c as a configs.toml document in the Config struct's order, with secrets
// redacted (an empty secret stays empty, so "generated" remains visible).
func (c *Config) WriteTOML(w io.Writer) error {
	table := ""
	var b strings.Builder
	for _, l := range leaves(c) {
		t, name := "", l.key
		if i := strings.LastIndex(l.key, "."); i >= 0 {
			t, name = l.key[:i], l.key[i+1:]
		}
		if t != table {
			if table != "" {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "[%s]\n", t)
			table = t
		}
		val := l.field.Interface()
		if secretKeys[l.key] && l.field.String() != "" {
			val = Redacted
		}
		fmt.Fprintf(&b, "%s = %s\n", name, tomlValue(reflect.ValueOf(val)))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func tomlValue(v reflect.Value) string {
	switch v.Kind() {
	case reflect.String:
		return tomlString(v.String())
	case reflect.Slice:
		items := make([]string, v.Len())
		for i := range items {
			items[i] = tomlString(v.Index(i).String())
		}
		return "[" + strings.Join(items, ", ") + "]"
	default:
		return fmt.Sprint(v.Interface())
	}
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Changed lists the keys whose values differ between a and b, in Keys order.
func Changed(a, b *Config) []string {
	la, lb := leaves(a), leaves(b)
	var out []string
	for i := range la {
		if !reflect.DeepEqual(la[i].field.Interface(), lb[i].field.Interface()) {
			out = append(out, la[i].key)
		}
	}
	return out
}
