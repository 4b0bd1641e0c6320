package hostapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/homeserver"
)

// Matrix error codes the host API answers with.
const (
	codeNotJSON            = "M_NOT_JSON"
	codeBadJSON            = "M_BAD_JSON"
	codeInvalidParam       = "M_INVALID_PARAM"
	codeUnsupportedVersion = "M_UNSUPPORTED_ROOM_VERSION"
	codeNotFound           = "M_NOT_FOUND"
	codeForbidden          = "M_FORBIDDEN"
	codeRoomInUse          = "M_ROOM_IN_USE"
	codeUnknown            = "M_UNKNOWN"
	codeMissingToken       = "M_MISSING_TOKEN"
	codeUnknownToken       = "M_UNKNOWN_TOKEN"
	codeUnrecognized       = "M_UNRECOGNIZED"
	codeTooLarge           = "M_TOO_LARGE"
)

// Error is a refusal with its HTTP status and Matrix errcode. Its Message
// is sent to the host as "error", so it must describe the request, never
// our internals.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// errorf returns an *Error with a formatted message.
func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// invalidParam is the refusal of a query or path parameter, or of a field
// whose value is well-typed but unacceptable (an ID that does not parse).
func invalidParam(format string, args ...any) *Error {
	return errorf(http.StatusBadRequest, codeInvalidParam, format, args...)
}

// badJSON is the refusal of a body that is JSON of the wrong shape.
func badJSON(format string, args ...any) *Error {
	return errorf(http.StatusBadRequest, codeBadJSON, format, args...)
}

var (
	errUnrecognized     = &Error{Status: http.StatusNotFound, Code: codeUnrecognized, Message: "Unrecognized request"}
	errMethodNotAllowed = &Error{Status: http.StatusMethodNotAllowed, Code: codeUnrecognized, Message: "Method not allowed"}
	errMissingToken     = &Error{Status: http.StatusUnauthorized, Code: codeMissingToken, Message: "Missing access token (Authorization: Bearer <token>)"}
	errUnknownToken     = &Error{Status: http.StatusUnauthorized, Code: codeUnknownToken, Message: "Unknown access token"}
	errShuttingDown     = &Error{Status: http.StatusServiceUnavailable, Code: codeUnknown, Message: "The server is shutting down"}
)

// refusalAnswer gives the status and default errcode of each kind of
// homeserver refusal.
func refusalAnswer(e *homeserver.Error) (status int, code string, ok bool) {
	switch {
	case e.NotFound():
		return http.StatusNotFound, codeNotFound, true
	case e.Forbidden():
		return http.StatusForbidden, codeForbidden, true
	case e.BadRequest():
		return http.StatusBadRequest, codeInvalidParam, true
	case e.Conflict():
		return http.StatusConflict, codeRoomInUse, true
	case e.Unavailable():
		return http.StatusBadGateway, codeUnknown, true
	}
	return 0, "", false
}

// errorFor returns the answer for err, and whether err is our own fault
// (internal): internal errors are logged and answered 500 M_UNKNOWN
// without their text.
func errorFor(err error) (answer *Error, internal bool) {
	if errors.As(err, &answer) {
		return answer, false
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "request body is larger than %d bytes", tooLarge.Limit), false
	}
	var refusal *homeserver.Error
	if errors.As(err, &refusal) {
		if status, code, ok := refusalAnswer(refusal); ok {
			if precise := refusal.MatrixCode(); precise != "" {
				code = precise
			}
			return &Error{Status: status, Code: code, Message: refusal.Message}, false
		}
	}
	return &Error{Status: http.StatusInternalServerError, Code: codeUnknown, Message: "Internal server error"}, true
}

// writeError renders err as a Matrix error. It is the only place errors
// become responses.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	answer, internal := errorFor(err)
	logger := zerolog.Ctx(r.Context()).With()
	if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok && info.route != "" {
		logger = logger.Str("route", info.route)
	}
	log := logger.Logger()
	switch {
	case internal && r.Context().Err() != nil && errors.Is(err, context.Canceled):
		// The host hung up; nobody reads the answer and nothing failed.
		log.Debug().Err(err).Msg("request abandoned by the client")
	case internal:
		log.Error().Err(err).Msg("request failed")
	case answer.Status >= 500:
		log.Warn().Err(err).Str("errcode", answer.Code).Msg("request failed")
	}
	writeJSON(w, answer.Status, map[string]string{"errcode": answer.Code, "error": answer.Message})
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
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}
