package hostapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/rs/zerolog"
)

// buildHandler assembles the handler chain: logging and panic recovery
// around everything; extra handlers at their exact paths without a token;
// every other request authenticated, then routed.
func (s *Server) buildHandler() http.Handler {
	// SkipClean keeps percent-encoded slashes and dot segments in IDs
	// intact; UseEncodedPath matches on the raw path so an ID containing
	// %2F stays one path segment. handle() decodes the variables once.
	r := mux.NewRouter().SkipClean(true).UseEncodedPath()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, errUnrecognized)
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, errMethodNotAllowed)
	})
	s.routes(r)
	authed := s.authenticate(r)
	return s.logRequests(recoverPanics(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, ok := s.extra[r.URL.Path]; ok {
			setRoute(r, r.URL.Path)
			h.ServeHTTP(w, r)
			return
		}
		authed.ServeHTTP(w, r)
	})))
}

// authenticate requires "Authorization: Bearer <token>", compared in
// constant time, before any route (unknown paths included, so that
// they reveal nothing to a caller without the token). Request bodies are
// bounded here too.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get("Authorization")
		if header == "" {
			writeError(w, r, errMissingToken)
			return
		}
		scheme, token, found := strings.Cut(header, " ")
		if !found || !strings.EqualFold(scheme, "Bearer") {
			writeError(w, r, errMissingToken)
			return
		}
		// Comparing digests keeps even the token's length out of the
		// timing.
		given := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if subtle.ConstantTimeCompare(given[:], s.tokenDigest[:]) != 1 {
			writeError(w, r, errUnknownToken)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.maxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// requestInfo collects what inner layers learn about a request (the
// matched route) for the single log line written when it ends.
type requestInfo struct {
	route string
}

type requestInfoKey struct{}

// setRoute records the route template that served the request.
func setRoute(r *http.Request, route string) {
	if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
		info.route = route
	}
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
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
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer
// (flushing).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// logRequests writes one line per request when it ends: method, route
// template (not the path, which holds user and room IDs, nor any header:
// the token stays out of logs), status and duration. Handlers get a
// request logger through zerolog.Ctx. The unauthenticated extra handlers
// (health checks, metrics scrapes) log at debug level only.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{}
		reqLog := s.logger.With().Str("method", r.Method).Logger()
		ctx := context.WithValue(r.Context(), requestInfoKey{}, info)
		ctx = reqLog.WithContext(ctx)
		rec := &statusRecorder{ResponseWriter: w}

		next.ServeHTTP(rec, r.WithContext(ctx))

		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		route := info.route
		_, extra := s.extra[r.URL.Path]
		if route == "" && extra {
			route = r.URL.Path
		}
		if route == "" {
			route = "(unrouted)"
		}
		line := reqLog.Info()
		if extra {
			line = reqLog.Debug()
		}
		elapsed := time.Since(start)
		line.Str("route", route).
			Int("status", status).
			Float64("duration_ms", float64(elapsed.Microseconds())/1000).
			Msg("request")
		if s.observe != nil {
			s.observe(route, r.Method, status, elapsed)
		}
	})
}

// recoverPanics turns a panicking handler into a 500 M_UNKNOWN and an
// error log line instead of a dropped connection. Handlers must not panic
// on input; this is the net under that rule.
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

// handlerFunc is the shape of every route: it writes a response and
// returns nil, or returns an error for writeError to render.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type pathVarsKey struct{}

// handle adapts a handlerFunc: it records the route template for the
// log, percent-decodes the route's path variables once (the router
// matches on the encoded path), then runs h and renders its error.
func (s *Server) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if route := mux.CurrentRoute(r); route != nil {
			if tpl, err := route.GetPathTemplate(); err == nil {
				setRoute(r, tpl)
			}
		}
		raw := mux.Vars(r)
		if len(raw) > 0 {
			vars := make(map[string]string, len(raw))
			for name, v := range raw {
				decoded, err := url.PathUnescape(v)
				if err != nil {
					writeError(w, r, invalidParam("path parameter %s is not valid percent-encoding", name))
					return
				}
				vars[name] = decoded
			}
			r = r.WithContext(context.WithValue(r.Context(), pathVarsKey{}, vars))
		}
		if err := h(w, r); err != nil {
			writeError(w, r, err)
		}
	})
}

// pathVar returns the decoded path variable name of the matched route.
func pathVar(r *http.Request, name string) string {
	vars, _ := r.Context().Value(pathVarsKey{}).(map[string]string)
	return vars[name]
}

// requestLog is the request's logger.
func requestLog(r *http.Request) *zerolog.Logger { return zerolog.Ctx(r.Context()) }
