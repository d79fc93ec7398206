package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/viper"

	"github.com/fusou-proxy/fusou-proxy/internal/datadir"

	"github.com/pelletier/go-toml/v2"
)

// FileName is the configuration file's name in the working and data directories.
const FileName = "configs.toml"

// EnvPrefix starts every environment override: FUSOU_ + the key path, upper-cased, dots as _.
const EnvPrefix = "FUSOU"

// DataDirEnv overrides the data directory (SPEC §2); it wins over app.data_dir.
const DataDirEnv = "FUSOU_DATA_DIR"

// Error is a configuration value that cannot be used. Key is the dotted key path.
type Error struct {
	Key string
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("config: %s: %s", e.Key, e.Msg) }

// SyntaxError is a configuration file that is not valid TOML, with where: the file and, when
// the parser says, the line and column.
type SyntaxError struct {
	File      string
	Line, Col int // 0 when unknown
	Msg       string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("config: %s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
	}
	return fmt.Sprintf("config: %s: %s", e.File, e.Msg)
}

// syntaxError describes viper's parse failure of file, with go-toml's position when it has one.
func syntaxError(file string, err error) error {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		return &SyntaxError{File: file, Line: line, Col: col, Msg: de.Error()}
	}
	return &SyntaxError{File: file, Msg: err.Error()}
}

// Sources says where Load looks. The zero value searches ./configs.toml, then the default
// data directory, with the process's environment.
type Sources struct {
	// File is --config: read this file and no other; it must exist.
	File string
	// DataDir is --data-dir; empty means FUSOU_DATA_DIR, app.data_dir, then defaultDataDir.
	DataDir string
	// WorkDir is where ./configs.toml is looked for; empty means the current directory.
	WorkDir string
	// LookupEnv reads the environment; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// Loaded is the outcome of Load.
type Loaded struct {
	Config
	// File is the configuration file that was read, or "" when only defaults and the
	// environment apply.
	File string
	// DataDir is the resolved, absolute data directory.
	DataDir string
	// Warnings lists keys that were set but mean nothing to fusou-proxy.
	Warnings []string
}

// Load reads the configuration from its sources and validates it. The error is an *Error
// naming the key for a bad value, or a plain error for a file that cannot be read or parsed.
func Load(src Sources) (*Loaded, error) {
	lookup := src.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	envDataDir, _ := lookup(DataDirEnv)

	file, err := findFile(src, envDataDir)
	if err != nil {
		return nil, err
	}
	v := viper.New()
	v.SetConfigType("toml")
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("config: open %s: %w", file, err)
		}
		err = v.ReadConfig(f)
		f.Close()
		if err != nil {
			return nil, syntaxError(file, err)
		}
	}

	out := &Loaded{Config: Default(), File: file}
	known := map[string]bool{}
	for _, leaf := range leaves(&out.Config) {
		known[leaf.key] = true
		raw, ok := lookupKey(v, lookup, leaf.key)
		if !ok {
			continue
		}
		if err := decode(leaf, raw); err != nil {
			return nil, err
		}
	}
	for _, k := range v.AllKeys() {
		if !known[k] {
			out.Warnings = append(out.Warnings, fmt.Sprintf("unknown config key %q in %s (ignored)", k, file))
		}
	}
	sort.Strings(out.Warnings)

	out.DataDir, err = resolveDataDir(src.DataDir, envDataDir, out.App.DataDir)
	if err != nil {
		return nil, err
	}
	if err := out.Validate(); err != nil {
		return nil, err
	}
	return out, nil
}

// defaultDataDir is os.UserConfigDir()/fusou-proxy (SPEC §2).
func defaultDataDir() (string, error) {
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find user config dir (set --data-dir or %s): %w", DataDirEnv, err)
	}
	return filepath.Join(base, datadir.DefaultName), nil
}

// findFile applies the search order: --config, ./configs.toml, <data_dir>/configs.toml.
func findFile(src Sources, envDataDir string) (string, error) {
	if src.File != "" {
		if _, err := os.Stat(src.File); err != nil {
			return "", fmt.Errorf("config: --config %s: %w", src.File, err)
		}
		return src.File, nil
	}
	local := filepath.Join(src.WorkDir, FileName)
	if exists(local) {
		return local, nil
	}
	// Only the flag, the environment or the default can point at the data directory here:
	// app.data_dir lives in a file we have not found yet.
	dir, err := resolveDataDir(src.DataDir, envDataDir, "")
	if err != nil {
		return "", err
	}
	if p := filepath.Join(dir, FileName); exists(p) {
		return p, nil
	}
	return "", nil
}

// exists reports whether path is there to be read; a file that cannot be read for want of
// permission counts, so that its error is reported rather than the file silently skipped.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil || errors.Is(err, fs.ErrPermission)
}

func resolveDataDir(flag, env, fromFile string) (string, error) {
	dir := flag
	if dir == "" {
		dir = env
	}
	if dir == "" {
		dir = fromFile
	}
	if dir == "" {
		return defaultDataDir()
	}
	if rest, ok := strings.CutPrefix(dir, "~/"); ok {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", &Error{Key: "app.data_dir", Msg: fmt.Sprintf("cannot expand ~: %v", err)}
		}
		dir = filepath.Join(home, rest)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", &Error{Key: "app.data_dir", Msg: err.Error()}
	}
	return abs, nil
}

// lookupKey returns the environment override for key, else the file's value.
func lookupKey(v *viper.Viper, lookup func(string) (string, bool), key string) (any, bool) {
	if s, ok := lookup(envName(key)); ok && s != "" {
		return s, true
	}
	if v.IsSet(key) {
		return v.Get(key), true
	}
	return nil, false
}

// envName is the environment variable that overrides key.
func envName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// leaf is one configuration key and the struct field that holds it.
type leaf struct {
	key   string
	field reflect.Value
}

// leaves walks c's `key` tags depth first, in declaration order.
func leaves(c *Config) []leaf {
	var out []leaf
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			key := prefix + t.Field(i).Tag.Get("key")
			if f := v.Field(i); f.Kind() == reflect.Struct {
				walk(key+".", f)
			} else {
				out = append(out, leaf{key: key, field: f})
			}
		}
	}
	walk("", reflect.ValueOf(c).Elem())
	return out
}

// Keys lists every configuration key, in the order of the Config struct.
func Keys() []string {
	var c Config
	var keys []string
	for _, l := range leaves(&c) {
		keys = append(keys, l.key)
	}
	return keys
}

// decode stores raw (a TOML value, or a string from the environment) into the leaf's field.
func decode(l leaf, raw any) error {
	var v any
	var want string
	switch l.field.Kind() {
	case reflect.String:
		v, want = asString(raw), "a string"
	case reflect.Bool:
		v, want = asBool(raw), "true or false"
	case reflect.Int, reflect.Int64:
		n, ok := asInt(raw)
		switch {
		case !ok:
			want = "a whole number"
		case l.field.OverflowInt(n):
			want = "a smaller whole number"
		default:
			v = n
		}
	case reflect.Slice:
		v, want = asList(raw), "a list of strings"
	default:
		return fmt.Errorf("config: %s: unsupported field kind %s", l.key, l.field.Kind())
	}
	if v == nil {
		return &Error{Key: l.key, Msg: fmt.Sprintf("want %s, got %v (%T)", want, raw, raw)}
	}
	l.field.Set(reflect.ValueOf(v).Convert(l.field.Type()))
	return nil
}

// asString returns raw as a string, or nil.
func asString(raw any) any {
	if s, ok := raw.(string); ok {
		return s
	}
	return nil
}

// asBool returns raw (a bool, or its text from the environment) as a bool, or nil.
func asBool(raw any) any {
	switch b := raw.(type) {
	case bool:
		return b
	case string:
		if parsed, err := strconv.ParseBool(strings.TrimSpace(b)); err == nil {
			return parsed
		}
	}
	return nil
}

// asInt returns raw (a TOML integer, or its text from the environment) as an int64.
func asInt(raw any) (int64, bool) {
	switch x := raw.(type) {
	case int64:
		return x, true
	case int:
		return int64(x), true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// asList returns raw (a TOML array of strings, or comma-separated text from the environment)
// as a non-nil []string, or nil.
func asList(raw any) any {
	list := []string{}
	switch x := raw.(type) {
	case []any:
		for _, item := range x {
			s, ok := item.(string)
			if !ok {
				return nil
			}
			list = append(list, s)
		}
	case []string:
		list = append(list, x...)
	case string: // environment: comma-separated
		for _, s := range strings.Split(x, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
	default:
		return nil
	}
	return list
}
