package pending

import (
	"strconv"
	"unicode/utf8"
)

// Opening a store decodes every .json, and at 100,000 entries encoding/json's reflection was most
// of Open's time. fastDecodeMeta parses the plain layout the store itself writes: one object with
// SPEC §6's keys spelled exactly, each at most once, string/integer values, headers an object of
// strings, a context of the same kind, no \u escapes. For anything else it returns ok=false and
// decodeMeta falls back to encoding/json, so its results never differ from encoding/json's;
// FuzzFastDecode checks exactly that.
func fastDecodeMeta(data []byte) (m Meta, c Context, ok bool) {
	p := parser{data: data}
	seen := 0
	ok = p.object(func(key []byte) bool {
		var bit int
		switch string(key) {
		case "id":
			bit = 1
			m.ID, ok = p.str()
		case "target_url":
			bit = 2
			m.TargetURL, ok = p.str()
		case "headers":
			bit = 4
			m.Headers, ok = p.strMap()
		case "created_at":
			bit = 8
			m.CreatedAt, ok = p.int()
		case "attempt_count":
			var n int64
			n, ok = p.int()
			bit, m.AttemptCount = 16, int(n)
			ok = ok && int64(m.AttemptCount) == n
		case "last_attempt_at":
			bit = 32
			m.LastAttemptAt, ok = p.int()
		case "last_error":
			bit = 64
			m.LastError, ok = p.str()
		case "file_path":
			bit = 128
			m.FilePath, ok = p.str()
		case "context":
			bit = 256
			m.Context, ok = p.str()
		default:
			return false
		}
		if seen&bit != 0 {
			return false // encoding/json keeps the last; leave such files to it
		}
		seen |= bit
		return ok
	}) && p.end()
	if !ok {
		return Meta{}, Context{}, false
	}
	c, ok = fastDecodeContext(m.Context)
	return m, c, ok
}

func fastDecodeContext(s string) (c Context, ok bool) {
	p := parser{data: []byte(s)}
	seen := 0
	ok = p.object(func(key []byte) bool {
		var bit int
		switch string(key) {
		case "relative_path":
			bit = 1
			c.RelativePath, ok = p.str()
		case "key":
			bit = 2
			c.Key, ok = p.str()
		case "file_size":
			bit = 4
			c.FileSize, ok = p.int()
		case "content_hash":
			bit = 8
			c.ContentHash, ok = p.str()
		case "content_type":
			bit = 16
			c.ContentType, ok = p.str()
		case "file_name":
			bit = 32
			c.FileName, ok = p.str()
		default:
			return false
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return ok
	}) && p.end()
	return c, ok
}

// parser reads the JSON subset above from data[i:]. Every method returns ok=false on anything
// outside the subset, valid JSON or not.
type parser struct {
	data []byte
	i    int
}

func (p *parser) ws() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) eat(b byte) bool {
	p.ws()
	if p.i < len(p.data) && p.data[p.i] == b {
		p.i++
		return true
	}
	return false
}

func (p *parser) end() bool {
	p.ws()
	return p.i == len(p.data)
}

// object parses {"key": value, ...}, calling field to parse each value. The key is only valid
// during the call.
func (p *parser) object(field func(key []byte) bool) bool {
	if !p.eat('{') {
		return false
	}
	if p.eat('}') {
		return true
	}
	for {
		key, ok := p.raw()
		if !ok || !p.eat(':') || !field(key) {
			return false
		}
		if p.eat('}') {
			return true
		}
		if !p.eat(',') {
			return false
		}
	}
}

func (p *parser) strMap() (map[string]string, bool) {
	m := map[string]string{}
	ok := p.object(func(key []byte) bool {
		if _, dup := m[string(key)]; dup {
			return false
		}
		v, ok := p.str()
		m[string(key)] = v
		return ok
	})
	return m, ok
}

// raw parses a string without escapes and returns its bytes, not copied.
func (p *parser) raw() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.data) {
		switch b := p.data[p.i]; {
		case b == '"':
			p.i++
			return p.data[start : p.i-1], utf8.Valid(p.data[start : p.i-1])
		case b < 0x20 || b == '\\':
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// str parses a string with the escapes encoding/json writes, except \u (left to encoding/json).
func (p *parser) str() (string, bool) {
	if !p.eat('"') {
		return "", false
	}
	var buf []byte // only used when the string has escapes
	for {
		start := p.i
		for p.i < len(p.data) && p.data[p.i] != '"' && p.data[p.i] != '\\' && p.data[p.i] >= 0x20 {
			p.i++
		}
		if p.i == len(p.data) || p.data[p.i] < 0x20 {
			return "", false
		}
		if p.data[p.i] == '"' {
			var s string
			if buf == nil {
				s = string(p.data[start:p.i])
			} else {
				s = string(append(buf, p.data[start:p.i]...))
			}
			p.i++
			// encoding/json replaces invalid UTF-8; leave that to it.
			return s, utf8.ValidString(s)
		}
		// A backslash.
		if buf == nil {
			buf = make([]byte, 0, len(p.data)-start)
		}
		buf = append(buf, p.data[start:p.i]...)
		if p.i+1 >= len(p.data) {
			return "", false
		}
		var r byte
		switch p.data[p.i+1] {
		case '"', '\\', '/':
			r = p.data[p.i+1]
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		default:
			return "", false
		}
		buf = append(buf, r)
		p.i += 2
	}
}

// int parses an integer in JSON's grammar that fits an int64.
func (p *parser) int() (int64, bool) {
	p.ws()
	start := p.i
	if p.i < len(p.data) && p.data[p.i] == '-' {
		p.i++
	}
	digits := p.i
	for p.i < len(p.data) && p.data[p.i] >= '0' && p.data[p.i] <= '9' {
		p.i++
	}
	if p.i == digits || (p.data[digits] == '0' && p.i-digits > 1) {
		return 0, false // no digits, or a leading zero
	}
	if p.i < len(p.data) {
		switch p.data[p.i] {
		case '.', 'e', 'E':
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(p.data[start:p.i]), 10, 64)
	return n, err == nil
}
