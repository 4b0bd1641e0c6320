package federation

import (
	"context"
	"fmt"
	"net/http"
)

// Log field names shared by every federation log line.
const (
	fieldOrigin = "origin"
	fieldMethod = "method"
	fieldPath   = "path"
)

// requestInfo collects what later layers learn about a request (the
// authenticated origin) for the single log line written when it ends.
type requestInfo struct {
	origin string
	route  string // the matched route's template, for metrics
}

type requestInfoKey struct{}

// setRequestOrigin records the origin server the request authenticated as,
// for the request log. The X-Matrix authentication layer calls it.
func setRequestOrigin(r *http.Request, origin string) {
	if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
		info.origin = origin
	}
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer
// (flushing, deadlines).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// logRequests logs every request once, when it completes, and gives the
// handlers a request-scoped logger (zerolog.Ctx) carrying method and path.
// It wraps the whole router so unknown paths are logged too.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		info := &requestInfo{}
		reqLog := s.Logger.With().Str(fieldMethod, r.Method).Str(fieldPath, r.URL.EscapedPath()).Logger()
		ctx := context.WithValue(r.Context(), requestInfoKey{}, info)
		ctx = reqLog.WithContext(ctx)
		rec := &statusRecorder{ResponseWriter: w}

		next.ServeHTTP(rec, r.WithContext(ctx))

		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		elapsed := s.now().Sub(start)
		if s.ObserveRequest != nil {
			route := info.route
			if route == "" {
				route = "(unrouted)"
			}
			s.ObserveRequest(route, r.Method, status, elapsed)
		}
		reqLog.Info().
			Int("status", status).
			Float64("duration_ms", float64(elapsed.Microseconds())/1000).
			Str(fieldOrigin, info.origin).
			Str("remote", r.RemoteAddr).
			Int64("bytes", rec.bytes).
			Msg("request")
	})
}

// recoverPanics turns a panicking handler into a 500 M_UNKNOWN and an
// error log line, instead of a dropped connection. Handlers must not panic
// on network input; this is the net under that rule.
func recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				writeError(w, r, fmt.Errorf("panic in handler: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}
