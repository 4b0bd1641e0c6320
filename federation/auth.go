package federation

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
)

// Incoming is an authenticated request as handlers behind X-Matrix see
// it: the verified origin and the body, read once.
type Incoming struct {
	Origin string
	// Body is the raw request body; empty when there was none.
	Body []byte
	// Content is Body parsed as JSON (rooms.ParseJSON types), nil when
	// there was no body.
	Content any
	// Lenient says Body is not strict canonical-JSON input (it has
	// numbers such as 1.0 or 1e3) and Content came from the lenient
	// parser: what it holds must not stand for a strictly parsed PDU.
	Lenient bool
}

// authedHandlerFunc is an endpoint that requires X-Matrix authentication.
type authedHandlerFunc func(w http.ResponseWriter, r *http.Request, in *Incoming) error

// unauthorized builds the 401 every authentication failure answers with.
func unauthorized(format string, args ...any) *MatrixError {
	me := Errorf(http.StatusUnauthorized, "M_UNAUTHORIZED", format, args...)
	// Carrying the cause makes writeError log the refusal (remote
	// misbehaviour, at warn level) with its reason.
	me.Err = ErrBadXMatrix
	return me
}

// authed wraps h with X-Matrix authentication (server-server API,
// "Request Authentication"): the Authorization header must parse, name us
// as destination when it names one, come from a server the allow / deny
// lists admit (else 403 M_FORBIDDEN), and carry a signature over method,
// the exact request URI, origin, destination and body that verifies with
// the origin's current key. Failures answer 401 M_UNAUTHORIZED saying what
// was wrong. Once authenticated, the origin's concurrency limit applies.
func (s *Server) authed(h authedHandlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		in, err := s.authenticate(w, r)
		if err != nil {
			return err
		}
		release, err := s.limiter().acquire(in.Origin)
		if err != nil {
			w.Header().Set("Retry-After", "1")
			return err
		}
		defer release()
		return h(w, r, in)
	}
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*Incoming, error) {
	headers := r.Header.Values("Authorization")
	var candidates []XMatrix
	var parseErrs []string
	for _, h := range headers {
		if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(h)), "x-matrix") {
			continue
		}
		x, err := ParseXMatrix(strings.TrimSpace(h))
		if err != nil {
			parseErrs = append(parseErrs, err.Error())
			continue
		}
		candidates = append(candidates, x)
	}
	if len(candidates) == 0 {
		if len(parseErrs) > 0 {
			return nil, unauthorized("malformed Authorization header: %s", strings.Join(parseErrs, "; "))
		}
		return nil, unauthorized("missing X-Matrix Authorization header")
	}
	origin := candidates[0].Origin
	for _, x := range candidates[1:] {
		if x.Origin != origin {
			return nil, unauthorized("Authorization headers name different origins")
		}
	}
	for _, x := range candidates {
		if x.Destination != "" && x.Destination != s.ServerName {
			return nil, unauthorized("X-Matrix destination is %q, but this server is %q", x.Destination, s.ServerName)
		}
	}
	if !s.Policy.Allowed(origin) {
		return nil, &MatrixError{Status: http.StatusForbidden, Code: "M_FORBIDDEN",
			Message: fmt.Sprintf("federation with %s is not allowed by this server", origin),
			Err:     fmt.Errorf("%w: %s", ErrServerDenied, origin)}
	}
	if origin == s.ServerName {
		return nil, unauthorized("origin %s is this server", origin)
	}

	body, content, lenient, err := s.readBody(w, r)
	if err != nil {
		return nil, err
	}
	if s.KeyRing == nil {
		return nil, errors.New("authenticated endpoint without a key ring")
	}

	var failures []string
	for _, x := range candidates {
		pub, err := s.KeyRing.RequestKey(r.Context(), x.Origin, x.KeyID)
		switch {
		case errors.Is(err, keys.ErrKeyExpired):
			failures = append(failures, fmt.Sprintf("key %s of %s is expired or retired", x.KeyID, x.Origin))
			continue
		case errors.Is(err, keys.ErrKeyNotFound):
			failures = append(failures, fmt.Sprintf("unknown key %s of %s", x.KeyID, x.Origin))
			continue
		case err != nil:
			return nil, fmt.Errorf("key %s of %s: %w", x.KeyID, x.Origin, err)
		}
		destination := x.Destination
		if destination == "" {
			destination = s.ServerName
		}
		if err := VerifyRequest(x, destination, r.Method, r.RequestURI, content, pub); err != nil {
			failures = append(failures, fmt.Sprintf("signature with key %s does not verify for %s %s", x.KeyID, r.Method, r.RequestURI))
			continue
		}
		setRequestOrigin(r, origin)
		return &Incoming{Origin: origin, Body: body, Content: content, Lenient: lenient}, nil
	}
	return nil, unauthorized("%s", strings.Join(failures, "; "))
}

// readBody reads the request body within the size limit and parses it as
// JSON: 413 M_TOO_LARGE over the limit, 400 M_NOT_JSON when it is not
// JSON, 400 M_BAD_JSON when it is not an object. No body gives nil, nil.
// The flag says the body parsed only leniently (numbers like 1.0).
// readAllSized reads r to its end into a buffer of the announced size
// (when known), instead of growing one by doubling: a /send body is read
// once per transaction and can be tens of kilobytes. The announcement is
// the sender's word, read before the request is authenticated, so it is
// believed only up to maxPresizedBody; past that the buffer grows with
// what actually arrives.
func readAllSized(r io.Reader, size int64) ([]byte, error) {
	if size <= 0 {
		return io.ReadAll(r)
	}
	buf := bytes.NewBuffer(make([]byte, 0, min(size, maxPresizedBody)+bytes.MinRead))
	_, err := buf.ReadFrom(r)
	return buf.Bytes(), err
}

// maxPresizedBody bounds the buffer readAllSized sets aside on the
// strength of a Content-Length header alone.
const maxPresizedBody = 1 << 20

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, any, bool, error) {
	limit := s.maxRequestBody()
	if r.ContentLength > limit {
		return nil, nil, false, &http.MaxBytesError{Limit: limit}
	}
	body, err := readAllSized(http.MaxBytesReader(w, r.Body, limit), r.ContentLength)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, nil, false, err
		}
		return nil, nil, false, Errorf(http.StatusBadRequest, "M_BAD_JSON", "could not read the request body")
	}
	if len(body) == 0 {
		return nil, nil, false, nil
	}
	content, err := rooms.ParseJSON(body)
	lenient := err != nil
	if err != nil {
		// Exact integers written as 1.0 or 1e3 still canonicalise.
		lenient, lerr := rooms.ParseJSONLenient(body)
		if lerr != nil {
			return nil, nil, false, Errorf(http.StatusBadRequest, "M_NOT_JSON", "request body is not valid JSON: %v", err)
		}
		content = lenient
	}
	if _, ok := content.(map[string]any); !ok {
		return nil, nil, false, Errorf(http.StatusBadRequest, "M_BAD_JSON", "request body must be a JSON object")
	}
	return body, content, lenient, nil
}
