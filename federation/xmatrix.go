package federation

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/ferry-matrix/ferry/rooms"
)

// maxAuthorizationLen bounds the Authorization header we try to parse. A
// real X-Matrix header is a few hundred bytes.
const maxAuthorizationLen = 4096

// ErrBadXMatrix is matched by every error about an X-Matrix Authorization
// header that is absent, malformed or does not verify.
var ErrBadXMatrix = errors.New("bad X-Matrix authorization")

// XMatrix is one X-Matrix Authorization header (server-server API,
// "Request Authentication"): who signed the request, for which server, with
// which key, and the signature.
type XMatrix struct {
	Origin      string // the sending server's name
	Destination string // our server name; empty when an old sender left it out
	KeyID       string // "ed25519:<version>"
	Signature   string // unpadded base64
}

// String formats the header value the way the spec asks senders to: one
// space after the scheme, lower-case names, every value quoted, no
// backslashes (server names, key IDs and base64 never need them).
func (x XMatrix) String() string {
	var b strings.Builder
	b.WriteString(`X-Matrix origin="`)
	b.WriteString(x.Origin)
	if x.Destination != "" {
		b.WriteString(`",destination="`)
		b.WriteString(x.Destination)
	}
	b.WriteString(`",key="`)
	b.WriteString(x.KeyID)
	b.WriteString(`",sig="`)
	b.WriteString(x.Signature)
	b.WriteString(`"`)
	return b.String()
}

// ParseXMatrix parses an Authorization header value leniently, as the spec
// asks recipients to: the scheme is case-insensitive and followed by one or
// more spaces; parameters are comma-separated name=value pairs in any order
// with optional whitespace around commas and '='; names are
// case-insensitive; values may be quoted (with backslash escapes) or bare,
// and bare values may contain ':'. Unknown parameters are ignored. origin,
// key and sig are required; destination is optional for old senders.
// Errors match ErrBadXMatrix and say what was wrong. It never panics.
func ParseXMatrix(header string) (XMatrix, error) {
	bad := func(format string, args ...any) (XMatrix, error) {
		return XMatrix{}, fmt.Errorf("%w: %s", ErrBadXMatrix, fmt.Sprintf(format, args...))
	}
	if len(header) > maxAuthorizationLen {
		return bad("header longer than %d bytes", maxAuthorizationLen)
	}
	sp := strings.IndexAny(header, " \t")
	if sp < 0 || !strings.EqualFold(header[:sp], "X-Matrix") {
		return bad("scheme is not X-Matrix")
	}
	p := xmParser{s: header, i: sp}
	params := map[string]string{}
	for {
		p.skipSpaceAndCommas()
		if p.done() {
			break
		}
		name, value, err := p.param()
		if err != nil {
			return bad("%v", err)
		}
		name = strings.ToLower(name)
		switch name {
		case "origin", "destination", "key", "sig":
			if _, dup := params[name]; dup {
				return bad("parameter %s appears twice", name)
			}
			params[name] = value
		}
		p.skipSpace()
		if !p.done() && p.s[p.i] != ',' {
			return bad("expected ',' after parameter %s", name)
		}
	}
	x := XMatrix{Origin: params["origin"], Destination: params["destination"], KeyID: params["key"], Signature: params["sig"]}
	for _, req := range []struct{ name, value string }{{"origin", x.Origin}, {"key", x.KeyID}, {"sig", x.Signature}} {
		if req.value == "" {
			return bad("missing %s", req.name)
		}
	}
	if _, err := parseServerName(x.Origin); err != nil {
		return bad("origin: %v", err)
	}
	if _, present := params["destination"]; present {
		if _, err := parseServerName(x.Destination); err != nil {
			return bad("destination: %v", err)
		}
	}
	return x, nil
}

// xmParser walks an Authorization header after its scheme.
type xmParser struct {
	s string
	i int
}

func (p *xmParser) done() bool { return p.i >= len(p.s) }

func (p *xmParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *xmParser) skipSpaceAndCommas() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == ',') {
		p.i++
	}
}

// param reads name BWS "=" BWS value.
func (p *xmParser) param() (name, value string, err error) {
	start := p.i
	for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
		p.i++
	}
	name = p.s[start:p.i]
	if name == "" {
		return "", "", fmt.Errorf("unexpected character %q at offset %d", p.s[p.i], p.i)
	}
	p.skipSpace()
	if p.done() || p.s[p.i] != '=' {
		return "", "", fmt.Errorf("parameter %s has no value", name)
	}
	p.i++
	p.skipSpace()
	if p.done() {
		return "", "", fmt.Errorf("parameter %s has no value", name)
	}
	if p.s[p.i] == '"' {
		p.i++
		var b strings.Builder
		for {
			if p.done() {
				return "", "", fmt.Errorf("unterminated quoted value for %s", name)
			}
			c := p.s[p.i]
			p.i++
			switch {
			case c == '"':
				return name, b.String(), nil
			case c == '\\':
				if p.done() {
					return "", "", fmt.Errorf("unterminated escape in value for %s", name)
				}
				if e := p.s[p.i]; e < 0x20 || e == 0x7f {
					return "", "", fmt.Errorf("control character in value for %s", name)
				}
				b.WriteByte(p.s[p.i])
				p.i++
			case c < 0x20 || c == 0x7f:
				return "", "", fmt.Errorf("control character in value for %s", name)
			default:
				b.WriteByte(c)
			}
		}
	}
	start = p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c == ',' || c == ' ' || c == '\t' {
			break
		}
		if c == '"' || c == '\\' || c < 0x20 || c == 0x7f {
			return "", "", fmt.Errorf("unexpected character %q in value for %s", c, name)
		}
		p.i++
	}
	return name, p.s[start:p.i], nil
}

// isTokenChar reports whether c may appear in an RFC 7230 token.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// requestObject builds the JSON object an X-Matrix signature covers. content
// is the parsed request body, or nil when the request has none.
func requestObject(method, uri, origin, destination string, content any) map[string]any {
	obj := map[string]any{
		"method":      method,
		"uri":         uri,
		"origin":      origin,
		"destination": destination,
	}
	if content != nil {
		obj["content"] = content
	}
	return obj
}

// SignRequest signs a request from key.ServerName to destination: method,
// uri (path and query exactly as on the request line) and content (the
// parsed JSON body as rooms.ParseJSON returns it, or nil for none).
func SignRequest(key rooms.SigningKey, destination, method, uri string, content any) (XMatrix, error) {
	obj := requestObject(method, uri, key.ServerName, destination, content)
	if err := rooms.SignJSON(obj, key); err != nil {
		return XMatrix{}, fmt.Errorf("sign request %s %s: %w", method, uri, err)
	}
	sig := rooms.Signatures(obj, key.ServerName)[key.KeyID]
	return XMatrix{Origin: key.ServerName, Destination: destination, KeyID: key.KeyID, Signature: sig}, nil
}

// SignRequestCanonical is SignRequest for a body given as canonical JSON
// bytes: the signed object is written around them (its keys in canonical
// order: content, destination, method, origin, uri) instead of parsing
// and encoding the body again.
func SignRequestCanonical(key rooms.SigningKey, destination, method, uri string, canonicalContent []byte) (XMatrix, error) {
	// The message is only needed until signed, and a delivery signs one
	// per destination of a transaction: its buffer is reused.
	buf := requestBuffers.Get().(*[]byte)
	defer func() {
		if cap(*buf) <= maxPooledRequestBuffer {
			requestBuffers.Put(buf)
		}
	}()
	msg := slices.Grow((*buf)[:0], len(canonicalContent)+len(destination)+len(uri)+len(key.ServerName)+64)
	defer func() { *buf = msg }()
	msg = append(msg, `{"content":`...)
	msg = append(msg, canonicalContent...)
	for _, f := range [...]struct{ name, value string }{
		{"destination", destination}, {"method", method}, {"origin", key.ServerName}, {"uri", uri},
	} {
		msg = append(msg, ',', '"')
		msg = append(msg, f.name...)
		msg = append(msg, '"', ':')
		var err error
		if msg, err = rooms.AppendCanonical(msg, f.value); err != nil {
			return XMatrix{}, fmt.Errorf("sign request %s %s: %s: %w", method, uri, f.name, err)
		}
	}
	msg = append(msg, '}')
	sig := rooms.EncodeBase64(ed25519.Sign(key.Private, msg))
	return XMatrix{Origin: key.ServerName, Destination: destination, KeyID: key.KeyID, Signature: sig}, nil
}

// requestBuffers holds buffers for the messages SignRequestCanonical signs.
var requestBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledRequestBuffer bounds the buffers kept for reuse.
const maxPooledRequestBuffer = 1 << 20

// VerifyRequest checks x's signature over the request with pub, the
// origin's key x.KeyID. destination is the name the signature must cover:
// x.Destination when the sender gave one, else our own server name. Errors
// match ErrBadXMatrix.
func VerifyRequest(x XMatrix, destination, method, uri string, content any, pub ed25519.PublicKey) error {
	obj := requestObject(method, uri, x.Origin, destination, content)
	obj["signatures"] = map[string]any{x.Origin: map[string]any{x.KeyID: x.Signature}}
	if err := rooms.VerifyJSONSignature(obj, x.Origin, x.KeyID, pub); err != nil {
		return fmt.Errorf("%w: signature from %s with key %s does not verify for %s %s", ErrBadXMatrix, x.Origin, x.KeyID, method, uri)
	}
	return nil
}
