package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/keys"
)

// Timeouts of the federation listener. Remote servers are untrusted, so a
// slow client must not hold a connection forever; send_join answers can be
// large, so writes get more time than reads.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 2 * time.Minute
	writeTimeout      = 5 * time.Minute
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
)

// DefaultKeyValidity is how far ahead valid_until_ts of our key document
// lies. Other servers cache our keys for that long; the document is
// re-signed when half of it has passed, so it never expires within the
// hour the spec warns about.
const DefaultKeyValidity = 24 * time.Hour

// Server is the inbound federation server. Fill the exported fields (or
// use NewServer), then call Open; Close shuts it down gracefully. Fields
// must not change after Open. A Server serves requests concurrently.
type Server struct {
	// ServerName is our Matrix server name. Required.
	ServerName string
	// Keys are our signing keys. Required.
	Keys *keys.Own
	// Addr is the host:port to listen on; port 0 picks a free port
	// (see ListenAddr).
	Addr string
	// TLSConfig, when set, makes the listener serve HTTPS with it; nil
	// serves plain HTTP (behind a TLS-terminating proxy).
	TLSConfig *tls.Config
	// WellKnownServer, when set, is served as the delegation target at
	// /.well-known/matrix/server.
	WellKnownServer string
	// Version is reported by /_matrix/federation/v1/version.
	Version string
	// KeyValidity is how long our published key document is valid;
	// DefaultKeyValidity when zero.
	KeyValidity time.Duration
	// Logger receives one line per request and server lifecycle events.
	// The zero value logs nothing.
	Logger zerolog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// ObserveRequest, when set, is told of every request when it ends:
	// the route template ("(unrouted)" when none matched), method, status
	// and duration, for metrics. It must be fast and safe for concurrent
	// use.
	ObserveRequest func(route, method string, status int, d time.Duration)

	// KeyRing verifies X-Matrix signatures with other servers' keys and
	// answers the notary endpoints. Authenticated endpoints answer 500
	// and the notary endpoints 404 without it.
	KeyRing *keys.Ring
	// Policy is the federation allow / deny list; refused origins get
	// 403 M_FORBIDDEN.
	Policy ServerPolicy
	// Directory answers /query/profile and /query/directory; nil answers
	// 404 M_NOT_FOUND.
	Directory Directory
	// MaxRequestBodyBytes bounds request bodies (413 M_TOO_LARGE above);
	// DefaultMaxRequestBodyBytes when zero.
	MaxRequestBodyBytes int64
	// MaxConcurrentPerOrigin bounds the authenticated requests one origin
	// may have in progress (429 M_LIMIT_EXCEEDED above);
	// DefaultMaxConcurrentPerOrigin when zero.
	MaxConcurrentPerOrigin int
	// Rooms serves /send and the room history endpoints; without it they
	// answer 404 M_UNRECOGNIZED.
	Rooms RoomHandler

	handlerOnce sync.Once
	handler     http.Handler

	keyDoc keyDocumentCache

	limiterOnce  sync.Once
	originLimits *originLimiter

	notaryLimiterOnce sync.Once
	notaryLimits      *originLimiter

	mu        sync.Mutex
	listener  net.Listener
	http      *http.Server
	serveDone chan struct{}
}

// NewServer returns a Server for serverName signing with own, with the
// defaults filled in: listening on 127.0.0.1:8448, no TLS, logging
// nothing.
func NewServer(serverName string, own *keys.Own) *Server {
	return &Server{
		ServerName: serverName,
		Keys:       own,
		Addr:       "127.0.0.1:8448",
		Version:    "dev",
		Logger:     zerolog.Nop(),
		Now:        time.Now,
	}
}

func (s *Server) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// Handler returns the server's HTTP handler: the router with request
// logging and panic recovery around it. Tests may serve it with httptest;
// Open serves it on Addr.
func (s *Server) Handler() http.Handler {
	s.handlerOnce.Do(func() {
		// SkipClean keeps percent-encoded slashes and dot segments in IDs
		// intact; UseEncodedPath matches on the raw path so an event ID
		// containing %2F stays one path segment. handle() decodes the
		// variables once.
		r := mux.NewRouter().SkipClean(true).UseEncodedPath()
		r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, r, ErrUnrecognized)
		})
		r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, r, ErrMethodNotAllowed)
		})
		r.Use(recordRoute)
		s.routes(r)
		s.handler = s.logRequests(recoverPanics(r))
	})
	return s.handler
}

// Open binds Addr (so a bind error is returned here, not later) and starts
// serving in the background.
func (s *Server) Open() error {
	if s.ServerName == "" || s.Keys == nil || len(s.Keys.Current) == 0 {
		return errors.New("federation server: ServerName and Keys are required")
	}
	handler := s.Handler()
	// Sign the key document now, so a signing problem stops the start
	// instead of failing the first request.
	if _, err := s.KeyDocument(); err != nil {
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.http != nil {
		return errors.New("federation server: already open")
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("federation listener: %w", err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// Handshake failures and similar connection noise from the
		// internet are debug material, not errors of ours.
		ErrorLog: log.New(debugWriter{s.Logger}, "", 0),
	}
	if s.TLSConfig != nil {
		srv.TLSConfig = s.TLSConfig.Clone()
	}
	s.listener, s.http, s.serveDone = ln, srv, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		var err error
		if srv.TLSConfig != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			s.Logger.Error().Err(err).Msg("federation listener stopped")
		}
	}(s.serveDone)
	return nil
}

// ListenAddr returns the address the server listens on, or nil before
// Open.
func (s *Server) ListenAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		return nil
	}
	return s.listener.Addr()
}

// URL returns the base URL of the listener ("https://127.0.0.1:port"), or
// "" before Open.
func (s *Server) URL() string {
	addr := s.ListenAddr()
	if addr == nil {
		return ""
	}
	scheme := "http"
	if s.TLSConfig != nil {
		scheme = "https"
	}
	return (&url.URL{Scheme: scheme, Host: addr.String()}).String()
}

// Close stops accepting connections and waits for in-flight requests to
// finish until ctx ends, then closes what is left. Closing a server that
// is not open does nothing.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	srv, done := s.http, s.serveDone
	s.http, s.listener = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		// In-flight requests outlived ctx: cut them off.
		err = errors.Join(err, srv.Close())
	}
	<-done
	return err
}

// debugWriter routes net/http's internal error log to zerolog at debug
// level.
type debugWriter struct{ log zerolog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
