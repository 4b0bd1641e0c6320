package rooms

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxSafeInteger is the largest integer magnitude canonical JSON allows
// (2^53 - 1); room versions 6 and later reject anything outside it.
const MaxSafeInteger = 1<<53 - 1

// commonStrings holds the keys and values found in nearly every event, so
// parsing shares one copy of each instead of allocating it again.
var commonStrings = func() map[string]string {
	m := map[string]string{}
	for _, s := range []string{
		"auth_events", "content", "depth", "hashes", "origin", "origin_server_ts",
		"prev_events", "room_id", "sender", "signatures", "state_key", "type",
		"unsigned", "sha256", "age", "age_ts", "redacts", "membership", "body",
		"msgtype", "m.text", "m.room.message", "m.room.member", "join", "leave",
		"invite", "m.mentions", "ed25519:auto", "",
	} {
		m[s] = s
	}
	return m
}()

// maxJSONDepth bounds nesting so hostile input cannot exhaust the stack.
const maxJSONDepth = 128

// ErrInvalidJSON is matched (errors.Is) by every JSON parsing failure.
var ErrInvalidJSON = errors.New("invalid JSON")

// JSONError describes where and why a JSON text failed strict parsing.
type JSONError struct {
	Offset int    // byte offset into the input
	Reason string // stable, human-readable cause
}

func (e *JSONError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.Reason)
}

// Unwrap lets callers match ErrInvalidJSON.
func (e *JSONError) Unwrap() error { return ErrInvalidJSON }

// JSON values produced by ParseJSON are one of: map[string]any, []any,
// string, int64, bool or nil. No other types appear, so code walking a
// parsed tree can switch exhaustively on them.

// ParseJSON parses data under the strict rules room versions 6 and later
// impose: integers only, within ±(2^53−1), no fractions, exponents or -0,
// valid UTF-8, no lone surrogates and no duplicate object keys.
func ParseJSON(data []byte) (any, error) {
	p := jsonParser{data: data}
	return p.parseDocument()
}

// ParseJSONLenient parses data like ParseJSON but accepts number tokens with
// fractions or exponents when they denote an exact integer in range (1e10,
// -0, 2.0). It exists for inputs outside events, such as the appendix's
// canonical-JSON examples; events always use ParseJSON.
func ParseJSONLenient(data []byte) (any, error) {
	p := jsonParser{data: data, lenientNumbers: true}
	return p.parseDocument()
}

// CanonicalJSON strictly parses data and returns its canonical encoding.
func CanonicalJSON(data []byte) ([]byte, error) {
	v, err := ParseJSON(data)
	if err != nil {
		return nil, err
	}
	return EncodeCanonical(v)
}

type jsonParser struct {
	data           []byte
	pos            int
	depth          int
	lenientNumbers bool
}

func (p *jsonParser) fail(reason string) error {
	return &JSONError{Offset: p.pos, Reason: reason}
}

func (p *jsonParser) parseDocument() (any, error) {
	p.skipSpace()
	v, err := p.parseValue()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(p.data) {
		return nil, p.fail("trailing data after JSON value")
	}
	return v, nil
}

func (p *jsonParser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *jsonParser) parseValue() (any, error) {
	if p.pos >= len(p.data) {
		return nil, p.fail("unexpected end of input")
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.parseObject()
	case c == '[':
		return p.parseArray()
	case c == '"':
		return p.parseString()
	case c == '-' || (c >= '0' && c <= '9'):
		return p.parseNumber()
	case c == 't':
		return true, p.expectLiteral("true")
	case c == 'f':
		return false, p.expectLiteral("false")
	case c == 'n':
		return nil, p.expectLiteral("null")
	default:
		return nil, p.fail(fmt.Sprintf("unexpected character %q", c))
	}
}

func (p *jsonParser) expectLiteral(lit string) error {
	if len(p.data)-p.pos < len(lit) || string(p.data[p.pos:p.pos+len(lit)]) != lit {
		return p.fail("invalid literal")
	}
	p.pos += len(lit)
	return nil
}

func (p *jsonParser) enter() error {
	p.depth++
	if p.depth > maxJSONDepth {
		return p.fail("nesting too deep")
	}
	return nil
}

func (p *jsonParser) parseObject() (any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.pos++ // '{'
	obj := make(map[string]any)
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		p.depth--
		return obj, nil
	}
	for {
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return nil, p.fail("expected object key")
		}
		keyStart := p.pos
		key, err := p.parseString()
		if err != nil {
			return nil, err
		}
		if _, dup := obj[key]; dup {
			p.pos = keyStart
			return nil, p.fail(fmt.Sprintf("duplicate key %q", key))
		}
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.fail("expected ':' after object key")
		}
		p.pos++
		p.skipSpace()
		val, err := p.parseValue()
		if err != nil {
			return nil, err
		}
		obj[key] = val
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail("unterminated object")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			p.depth--
			return obj, nil
		default:
			return nil, p.fail("expected ',' or '}' in object")
		}
	}
}

func (p *jsonParser) parseArray() (any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.pos++ // '['
	arr := make([]any, 0, 4)
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		p.depth--
		return arr, nil
	}
	for {
		p.skipSpace()
		val, err := p.parseValue()
		if err != nil {
			return nil, err
		}
		arr = append(arr, val)
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail("unterminated array")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			p.depth--
			return arr, nil
		default:
			return nil, p.fail("expected ',' or ']' in array")
		}
	}
}

func (p *jsonParser) parseString() (string, error) {
	p.pos++ // opening quote
	start := p.pos
	// Fast path: no escapes, all ASCII or valid UTF-8.
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		if c == '"' {
			s := p.data[start:p.pos]
			p.pos++
			if common, ok := commonStrings[string(s)]; ok {
				return common, nil
			}
			if !utf8.Valid(s) {
				p.pos--
				return "", p.fail("invalid UTF-8 in string")
			}
			return string(s), nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", p.fail("unescaped control character in string")
		}
		p.pos++
	}
	if p.pos >= len(p.data) {
		return "", p.fail("unterminated string")
	}
	buf := make([]byte, 0, p.pos-start+16)
	buf = append(buf, p.data[start:p.pos]...)
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			if !utf8.Valid(buf) {
				return "", p.fail("invalid UTF-8 in string")
			}
			p.pos++
			return string(buf), nil
		case c < 0x20:
			return "", p.fail("unescaped control character in string")
		case c != '\\':
			buf = append(buf, c)
			p.pos++
			continue
		}
		p.pos++ // backslash
		if p.pos >= len(p.data) {
			return "", p.fail("unterminated escape")
		}
		esc := p.data[p.pos]
		p.pos++
		switch esc {
		case '"', '\\', '/':
			buf = append(buf, esc)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, err := p.parseHex4()
			if err != nil {
				return "", err
			}
			if utf16.IsSurrogate(r) {
				if r >= 0xDC00 {
					return "", p.fail("lone low surrogate")
				}
				if p.pos+1 >= len(p.data) || p.data[p.pos] != '\\' || p.data[p.pos+1] != 'u' {
					return "", p.fail("lone high surrogate")
				}
				p.pos += 2
				r2, err := p.parseHex4()
				if err != nil {
					return "", err
				}
				if r2 < 0xDC00 || r2 > 0xDFFF {
					return "", p.fail("high surrogate not followed by low surrogate")
				}
				r = utf16.DecodeRune(r, r2)
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", p.fail(fmt.Sprintf("invalid escape \\%c", esc))
		}
	}
	return "", p.fail("unterminated string")
}

func (p *jsonParser) parseHex4() (rune, error) {
	if len(p.data)-p.pos < 4 {
		return 0, p.fail("short \\u escape")
	}
	var r rune
	for i := 0; i < 4; i++ {
		c := p.data[p.pos+i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, p.fail("invalid hex digit in \\u escape")
		}
		r = r<<4 | rune(d)
	}
	p.pos += 4
	return r, nil
}

func (p *jsonParser) parseNumber() (any, error) {
	start := p.pos
	if p.data[p.pos] == '-' {
		p.pos++
	}
	if p.pos >= len(p.data) {
		return nil, p.fail("truncated number")
	}
	if p.data[p.pos] == '0' {
		p.pos++
	} else if p.data[p.pos] >= '1' && p.data[p.pos] <= '9' {
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			p.pos++
		}
	} else {
		return nil, p.fail("invalid number")
	}
	integral := true
	if p.pos < len(p.data) && p.data[p.pos] == '.' {
		integral = false
		p.pos++
		digits := p.pos
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			p.pos++
		}
		if p.pos == digits {
			return nil, p.fail("invalid number: no digits after '.'")
		}
	}
	if p.pos < len(p.data) && (p.data[p.pos] == 'e' || p.data[p.pos] == 'E') {
		integral = false
		p.pos++
		if p.pos < len(p.data) && (p.data[p.pos] == '+' || p.data[p.pos] == '-') {
			p.pos++
		}
		digits := p.pos
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			p.pos++
		}
		if p.pos == digits {
			return nil, p.fail("invalid number: no digits in exponent")
		}
	}
	tok := string(p.data[start:p.pos])
	if integral {
		if tok == "-0" && !p.lenientNumbers {
			p.pos = start
			return nil, p.fail("negative zero is not allowed")
		}
		n, err := strconv.ParseInt(tok, 10, 64)
		if err != nil || n > MaxSafeInteger || n < -MaxSafeInteger {
			p.pos = start
			return nil, p.fail("integer out of range ±(2^53-1)")
		}
		return n, nil
	}
	if !p.lenientNumbers {
		p.pos = start
		return nil, p.fail("only integers are allowed (no fraction or exponent)")
	}
	f, err := strconv.ParseFloat(tok, 64)
	if err != nil || f != float64(int64(f)) || f > MaxSafeInteger || f < -MaxSafeInteger {
		p.pos = start
		return nil, p.fail("number is not an integer in range ±(2^53-1)")
	}
	return int64(f), nil
}

// EncodeCanonical encodes v as canonical JSON: keys sorted by code point, no
// insignificant whitespace, minimal escaping. v may be built from the types
// ParseJSON produces plus the conveniences map[string]string, []string,
// map[string][]string, map[string]map[string]string, int and int32. Strings
// must be valid UTF-8 and integers within ±(2^53−1).
func EncodeCanonical(v any) ([]byte, error) {
	return AppendCanonical(make([]byte, 0, 256), v)
}

// AppendCanonical appends the canonical encoding of v to dst.
func AppendCanonical(dst []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case bool:
		if x {
			return append(dst, "true"...), nil
		}
		return append(dst, "false"...), nil
	case string:
		return appendCanonicalString(dst, x)
	case int64:
		return appendCanonicalInt(dst, x)
	case int:
		return appendCanonicalInt(dst, int64(x))
	case int32:
		return appendCanonicalInt(dst, int64(x))
	case map[string]any:
		var small [16]string
		keys := small[:0]
		for k := range x {
			keys = append(keys, k)
		}
		// Byte-wise order of UTF-8 is code-point order, as the spec asks.
		slices.Sort(keys)
		dst = append(dst, '{')
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendCanonicalString(dst, k); err != nil {
				return nil, err
			}
			dst = append(dst, ':')
			if dst, err = AppendCanonical(dst, x[k]); err != nil {
				return nil, err
			}
		}
		return append(dst, '}'), nil
	case []any:
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = AppendCanonical(dst, e); err != nil {
				return nil, err
			}
		}
		return append(dst, ']'), nil
	case []string:
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendCanonicalString(dst, e); err != nil {
				return nil, err
			}
		}
		return append(dst, ']'), nil
	case map[string]string:
		m := make(map[string]any, len(x))
		for k, s := range x {
			m[k] = s
		}
		return AppendCanonical(dst, m)
	case map[string][]string:
		m := make(map[string]any, len(x))
		for k, s := range x {
			m[k] = s
		}
		return AppendCanonical(dst, m)
	case map[string]map[string]string:
		m := make(map[string]any, len(x))
		for k, s := range x {
			m[k] = s
		}
		return AppendCanonical(dst, m)
	default:
		return nil, fmt.Errorf("canonical JSON: unsupported type %T", v)
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Byte-wise order of UTF-8 equals code-point order, which the spec requires.
	slices.Sort(keys)
	return keys
}

func appendCanonicalInt(dst []byte, n int64) ([]byte, error) {
	if n > MaxSafeInteger || n < -MaxSafeInteger {
		return nil, fmt.Errorf("canonical JSON: integer %d out of range ±(2^53-1)", n)
	}
	return strconv.AppendInt(dst, n, 10), nil
}

const hexDigits = "0123456789abcdef"

func appendCanonicalString(dst []byte, s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("canonical JSON: string is not valid UTF-8")
	}
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\r':
			dst = append(dst, '\\', 'r')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), nil
}

// member is one "key":value pair of an object's canonical encoding: the
// bytes buf[start:end] of the buffer encodeMembers filled.
type member struct {
	key        string
	start, end int
}

// encodeMembers encodes obj canonically into dst and also returns where
// each member's bytes lie, in key order, so that encodings of the object
// without some members (content hash) or with one member replaced
// (reference hash) can be put together without encoding again.
func encodeMembers(dst []byte, obj map[string]any) ([]byte, []member, error) {
	keys := sortedKeys(obj)
	members := make([]member, len(keys))
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		start := len(dst)
		var err error
		if dst, err = appendCanonicalString(dst, k); err != nil {
			return nil, nil, err
		}
		dst = append(dst, ':')
		if dst, err = AppendCanonical(dst, obj[k]); err != nil {
			return nil, nil, err
		}
		members[i] = member{key: k, start: start, end: len(dst)}
	}
	return append(dst, '}'), members, nil
}

// appendMembers appends an object made of the members of buf for which
// keep returns true.
func appendMembers(dst, buf []byte, members []member, keep func(key string) bool) []byte {
	dst = append(dst, '{')
	first := true
	for _, m := range members {
		if !keep(m.key) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, buf[m.start:m.end]...)
	}
	return append(dst, '}')
}

// appendCanonicalFiltered appends the canonical encoding of obj without
// the top-level members for which keep returns false.
func appendCanonicalFiltered(dst []byte, obj map[string]any, keep func(key string) bool) ([]byte, error) {
	keys := sortedKeys(obj)
	dst = append(dst, '{')
	first := true
	for _, k := range keys {
		if !keep(k) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		var err error
		if dst, err = appendCanonicalString(dst, k); err != nil {
			return nil, err
		}
		dst = append(dst, ':')
		if dst, err = AppendCanonical(dst, obj[k]); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}
