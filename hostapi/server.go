package hostapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Defaults and bounds of the host listener.
const (
	// DefaultMaxBodyBytes bounds request bodies (413 M_TOO_LARGE above).
	DefaultMaxBodyBytes = 1 << 20
	// DefaultKeepAlive is how often an idle event stream (SSE) sends a
	// comment line, so proxies and clients see the connection is alive.
	DefaultKeepAlive = 15 * time.Second

	readHeaderTimeout = 10 * time.Second
	readTimeout       = time.Minute
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	// socketMode lets the owner and its group (the host product's
	// service account) use a unix socket, nobody else.
	socketMode fs.FileMode = 0o660
)

// Config is what New needs.
type Config struct {
	// Host performs the operations. Required; *homeserver.Host.
	Host Host
	// Cursors persists the webhook deliverer's position. Required when
	// WebhookURL is set; *store.DB.
	Cursors Cursors
	// Token is the bearer token every request must carry. Required.
	Token string
	// ServerName, when set, lets requests naming users or aliases of
	// other servers where only local ones make sense be refused before
	// the host is called; the host refuses them anyway.
	ServerName string
	// WebhookURL, when set, receives every item of the host event log
	// in signed batches (see webhook.go). WebhookSecret, required with
	// it, is the HMAC-SHA256 key of the signature.
	WebhookURL    string
	WebhookSecret string
	// WebhookMinBackoff and WebhookMaxBackoff bound the wait between
	// attempts to deliver a batch; 1 s and 5 min when zero.
	WebhookMinBackoff time.Duration
	WebhookMaxBackoff time.Duration
	// WebhookClient sends the webhook requests; a client with a 30 s
	// timeout when nil.
	WebhookClient *http.Client
	// Logger receives one line per request and lifecycle events. The
	// zero value logs nothing.
	Logger zerolog.Logger
	// Extra handlers are served at exact paths without authentication
	// (/healthz, /readyz, /metrics).
	Extra map[string]http.Handler
	// ObserveRequest, when set, is told of every request when it ends:
	// the route template (an extra handler's path; "(unrouted)" when no
	// route matched), method, status and duration, for metrics. It must
	// be fast and safe for concurrent use.
	ObserveRequest func(route, method string, status int, d time.Duration)
	// MaxBodyBytes bounds request bodies; DefaultMaxBodyBytes when zero.
	MaxBodyBytes int64
	// KeepAlive is the interval of SSE keepalive comments;
	// DefaultKeepAlive when zero.
	KeepAlive time.Duration
}

// Server is the host API server. Create it with New, serve it with Open
// (or mount Handler elsewhere), stop it with Close. A Server serves
// requests concurrently.
type Server struct {
	host         Host
	tokenDigest  [sha256.Size]byte
	serverName   string
	logger       zerolog.Logger
	extra        map[string]http.Handler
	observe      func(route, method string, status int, d time.Duration)
	maxBodyBytes int64
	keepAlive    time.Duration
	handler      http.Handler
	webhook      *webhookDeliverer

	// life ends when Close begins: event streams and long polls watch
	// it so that shutdown does not wait for their timeouts.
	life    context.Context
	endLife context.CancelFunc

	mu        sync.Mutex
	listener  net.Listener
	http      *http.Server
	serveDone chan struct{}
}

// New checks cfg and returns a Server; nothing runs until Open.
func New(cfg Config) (*Server, error) {
	if cfg.Host == nil {
		return nil, errors.New("host api: Config.Host is required")
	}
	if cfg.Token == "" {
		return nil, errors.New("host api: Config.Token is required")
	}
	s := &Server{
		host:         cfg.Host,
		tokenDigest:  sha256.Sum256([]byte(cfg.Token)),
		serverName:   cfg.ServerName,
		logger:       cfg.Logger,
		extra:        cfg.Extra,
		observe:      cfg.ObserveRequest,
		maxBodyBytes: cfg.MaxBodyBytes,
		keepAlive:    cfg.KeepAlive,
	}
	if s.maxBodyBytes <= 0 {
		s.maxBodyBytes = DefaultMaxBodyBytes
	}
	if s.keepAlive <= 0 {
		s.keepAlive = DefaultKeepAlive
	}
	if cfg.WebhookURL != "" {
		wh, err := newWebhookDeliverer(cfg)
		if err != nil {
			return nil, err
		}
		s.webhook = wh
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	s.handler = s.buildHandler()
	return s, nil
}

// Handler returns the server's HTTP handler: the unauthenticated extra
// handlers, then the bearer token check, the routes, request logging and
// panic recovery. Open serves it; tests and embedders may serve it
// themselves.
func (s *Server) Handler() http.Handler { return s.handler }

// Open listens on listen, "host:port" or "unix:/path/to/socket", binding
// before it returns (so an address in use is an error here), then serves
// in the background and starts the webhook deliverer. A unix socket file
// left by a previous run is removed; one that a running server still
// answers on is an error.
func (s *Server) Open(listen string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.http != nil {
		return errors.New("host api: already open")
	}
	if s.life.Err() != nil {
		return errors.New("host api: closed")
	}
	ln, err := listenOn(listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		// No WriteTimeout: event streams stay open for as long as the
		// host reads them. Close ends them.
		IdleTimeout:    idleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       log.New(debugWriter{s.logger}, "", 0),
	}
	s.listener, s.http, s.serveDone = ln, srv, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error().Err(err).Msg("host api listener stopped")
		}
	}(s.serveDone)
	if s.webhook != nil {
		s.webhook.start(s.life)
	}
	s.logger.Info().Str("listen", ln.Addr().String()).Str("network", ln.Addr().Network()).Bool("webhook", s.webhook != nil).Msg("host api listening")
	return nil
}

// listenOn binds a TCP address or, with the "unix:" prefix, a unix
// socket.
func listenOn(listen string) (net.Listener, error) {
	path, isUnix := strings.CutPrefix(listen, "unix:")
	if !isUnix {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return nil, fmt.Errorf("host api listener: %w", err)
		}
		return ln, nil
	}
	if path == "" {
		return nil, errors.New("host api listener: unix: needs a socket path")
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("host api listener: %w", err)
	}
	if err := os.Chmod(path, socketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("host api listener: %w", err)
	}
	return ln, nil
}

// removeStaleSocket removes a socket file nobody listens on any more
// (left by a crash). It refuses to remove anything that is not a socket,
// or a socket a server still answers on.
func removeStaleSocket(path string) error {
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("host api listener: %w", err)
	}
	if info.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("host api listener: %s exists and is not a socket; refusing to replace it", path)
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("host api listener: %s is in use by another running server", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("host api listener: remove stale socket: %w", err)
	}
	return nil
}

// Addr returns the address the server listens on, or nil before Open.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		return nil
	}
	return s.listener.Addr()
}

// URL returns the base URL of a TCP listener ("http://127.0.0.1:8009"),
// or "unix:/path" for a unix socket, or "" before Open.
func (s *Server) URL() string {
	addr := s.Addr()
	if addr == nil {
		return ""
	}
	if addr.Network() == "unix" {
		return "unix:" + addr.String()
	}
	return (&url.URL{Scheme: "http", Host: addr.String()}).String()
}

// Close ends event streams and long polls at once, stops accepting
// connections, waits until ctx ends for the other requests to finish
// (then cuts them off), and stops the webhook deliverer. A closed Server
// cannot be opened again.
func (s *Server) Close(ctx context.Context) error {
	s.endLife()
	s.mu.Lock()
	srv, done := s.http, s.serveDone
	s.http, s.listener = nil, nil
	s.mu.Unlock()
	var err error
	if srv != nil {
		if err = srv.Shutdown(ctx); err != nil {
			// Requests outlived ctx: cut them off.
			err = errors.Join(err, srv.Close())
		}
		<-done
	}
	if s.webhook != nil {
		s.webhook.wait()
	}
	if err != nil {
		return fmt.Errorf("host api: close: %w", err)
	}
	return nil
}

// debugWriter routes net/http's internal error log to zerolog at debug
// level.
type debugWriter struct{ log zerolog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
