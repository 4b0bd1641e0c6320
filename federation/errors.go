package federation

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
)

// MatrixError is an error with its Matrix error code and HTTP status.
// Handlers return one for every failure caused by the request; its Message
// is sent to the remote server as the "error" field.
type MatrixError struct {
	Status  int    // HTTP status, e.g. 404
	Code    string // errcode, e.g. "M_NOT_FOUND"
	Message string // human-readable text, sent as "error"
	// Extra holds additional top-level fields some errors carry, such as
	// room_version with M_INCOMPATIBLE_ROOM_VERSION.
	Extra map[string]any
	// Err is the underlying cause, if any; it is logged, not sent.
	Err error
}

func (e *MatrixError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *MatrixError) Unwrap() error { return e.Err }

// Errorf returns a *MatrixError with a formatted message.
func Errorf(status int, code, format string, args ...any) *MatrixError {
	return &MatrixError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Errors for conditions every endpoint shares.
var (
	// ErrUnrecognized answers a path no route serves.
	ErrUnrecognized = &MatrixError{Status: http.StatusNotFound, Code: "M_UNRECOGNIZED", Message: "Unrecognized request"}
	// ErrMethodNotAllowed answers a known path asked with the wrong method;
	// the spec uses M_UNRECOGNIZED for it too.
	ErrMethodNotAllowed = &MatrixError{Status: http.StatusMethodNotAllowed, Code: "M_UNRECOGNIZED", Message: "Method not allowed"}
)

// sentinels maps errors from the protocol packages to Matrix errors. Their
// messages describe the remote server's input, so they are safe to echo.
var sentinels = []struct {
	target error
	status int
	code   string
}{
	{rooms.ErrInvalidJSON, http.StatusBadRequest, "M_NOT_JSON"},
	{rooms.ErrBadFormat, http.StatusBadRequest, "M_BAD_JSON"},
	{rooms.ErrUnsupportedVersion, http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION"},
	{keys.ErrInvalidServerKeys, http.StatusBadRequest, "M_INVALID_PARAM"},
	{ErrBadXMatrix, http.StatusUnauthorized, "M_UNAUTHORIZED"},
	{ErrServerDenied, http.StatusForbidden, "M_FORBIDDEN"},
	{ErrNotFound, http.StatusNotFound, "M_NOT_FOUND"},
}

// matrixErrorFor returns the Matrix error to send for err, and whether err
// is our own fault (internal), which is logged and never echoed.
func matrixErrorFor(err error) (me *MatrixError, internal bool) {
	if errors.As(err, &me) {
		return me, false
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return Errorf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "request body is larger than %d bytes", tooLarge.Limit), false
	}
	for _, s := range sentinels {
		if errors.Is(err, s.target) {
			return &MatrixError{Status: s.status, Code: s.code, Message: err.Error()}, false
		}
	}
	// Collaborators in packages federation may not import (the room
	// engine) classify their errors through these methods; such errors
	// describe the requester's input and are echoed.
	if status, code, ok := classified(err); ok {
		var coded interface{ MatrixCode() string }
		if errors.As(err, &coded) && coded.MatrixCode() != "" {
			code = coded.MatrixCode()
		}
		return &MatrixError{Status: status, Code: code, Message: err.Error()}, false
	}
	return &MatrixError{Status: http.StatusInternalServerError, Code: "M_UNKNOWN", Message: "Internal server error"}, true
}

// classes are the kinds of refusal other packages' errors report through
// a method of that name, with the answer each one gets.
var classes = []struct {
	is     func(error) bool
	status int
	code   string
}{
	{hasMethod(func(e interface{ NotFound() bool }) bool { return e.NotFound() }), http.StatusNotFound, "M_NOT_FOUND"},
	{hasMethod(func(e interface{ Forbidden() bool }) bool { return e.Forbidden() }), http.StatusForbidden, "M_FORBIDDEN"},
	{hasMethod(func(e interface{ BadRequest() bool }) bool { return e.BadRequest() }), http.StatusBadRequest, "M_INVALID_PARAM"},
	{hasMethod(func(e interface{ Conflict() bool }) bool { return e.Conflict() }), http.StatusConflict, "M_UNKNOWN"},
	{hasMethod(func(e interface{ Unavailable() bool }) bool { return e.Unavailable() }), http.StatusBadGateway, "M_UNKNOWN"},
}

// hasMethod adapts a classifying method to a test on any error chain.
func hasMethod[T any](test func(T) bool) func(error) bool {
	return func(err error) bool {
		var target T
		return errors.As(err, &target) && test(target)
	}
}

// classified returns the answer for an error that classifies itself.
func classified(err error) (status int, code string, ok bool) {
	for _, c := range classes {
		if c.is(err) {
			return c.status, c.code, true
		}
	}
	return 0, "", false
}

// writeError renders err as a Matrix error. It is the only place errors
// become responses.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	me, internal := matrixErrorFor(err)
	log := zerolog.Ctx(r.Context())
	if internal {
		log.Error().Err(err).Msg("request failed")
	} else if me.Status >= 500 || me.Err != nil {
		log.Warn().Err(err).Str("errcode", me.Code).Msg("request failed")
	}
	body := make(map[string]any, len(me.Extra)+2)
	for k, v := range me.Extra {
		body[k] = v
	}
	body["errcode"] = me.Code
	body["error"] = me.Message
	writeJSON(w, me.Status, body)
}

// writeJSON sends v as a JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		// Only reachable with a value json cannot encode: a programming
		// error, reported as such rather than as a half-written body.
		status = http.StatusInternalServerError
		data = []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	writeRawJSON(w, status, data)
}

// writeRawJSON sends already-encoded JSON.
func writeRawJSON(w http.ResponseWriter, status int, data []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}
