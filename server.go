package ferry

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/config"
	"github.com/ferry-matrix/ferry/federation"
	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/hostapi"
	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/metrics"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// Options are the parts of a server that are not configuration: they
// belong to the program embedding Ferry.
type Options struct {
	// Logger receives the server's logs; the zero value logs nothing.
	Logger zerolog.Logger
	// Version is reported at /_matrix/federation/v1/version; "dev" when
	// empty.
	Version string
	// GetCertificate, when set, supplies the federation listener's
	// certificate at each handshake in place of loading
	// federation.tls_cert once, so the program can reload it (ferry serve
	// does on SIGHUP). Used only when tls_cert is configured.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// Server is one running Ferry homeserver: every component wired in the
// order they depend on each other. Start it with Start, stop it with
// Close. Its methods give the embedding program the components to call in
// process; Host is the one meant for products.
type Server struct {
	cfg      *config.Config
	logger   zerolog.Logger
	keys     *keys.Own
	db       *store.DB
	client   *federation.Client
	ring     *keys.Ring
	engine   *homeserver.Engine
	delivery *homeserver.Delivery
	host     *homeserver.Host
	// stopDelivery ends the lifetime of the delivery's senders.
	stopDelivery context.CancelFunc
	federation   *federation.Server
	hostAPI      *hostapi.Server
	metrics      *metrics.Metrics
	// metricsListener serves /metrics alone on metrics.listen; nil when
	// that is empty.
	metricsListener *metrics.Listener
	// closers run in reverse order on Close, after the listeners stop.
	closers []func() error
}

// seenRooms is the engine as the federation server's room handler, noting
// every origin that sends a transaction as reachable, which ends its
// outbound backoff.
type seenRooms struct {
	*homeserver.Engine
	delivery *homeserver.Delivery
	metrics  *metrics.Metrics
}

// The federation server registers the membership endpoints only for a
// room handler that serves them; these make losing one a build error.
var (
	_ federation.MembershipHandler = seenRooms{}
	_ federation.LeaveHandler      = seenRooms{}
	_ federation.InviteHandler     = seenRooms{}
	_ federation.KnockHandler      = seenRooms{}
	_ federation.PDUTreeReceiver   = seenRooms{}
)

func (s seenRooms) TransactionResponse(ctx context.Context, origin, txnID string) ([]byte, bool, error) {
	s.delivery.DestinationSeen(origin)
	resp, found, err := s.Engine.TransactionResponse(ctx, origin, txnID)
	if err == nil && found {
		s.metrics.InboundTransaction(true)
	}
	return resp, found, err
}

// ReceivePDUs counts a transaction and its PDUs' verdicts.
func (s seenRooms) ReceivePDUs(ctx context.Context, origin string, pdus [][]byte) map[string]error {
	return s.ReceivePDUTrees(ctx, origin, pdus, nil)
}

// ReceivePDUTrees is ReceivePDUs for PDUs the federation server parsed
// already (the engine's method would otherwise be promoted uncounted).
func (s seenRooms) ReceivePDUTrees(ctx context.Context, origin string, pdus [][]byte, trees []any) map[string]error {
	verdicts := s.Engine.ReceivePDUTrees(ctx, origin, pdus, trees)
	s.metrics.InboundTransaction(false)
	s.metrics.InboundPDUs(verdicts)
	return verdicts
}

// ReceiveEDU counts an EDU by type.
func (s seenRooms) ReceiveEDU(ctx context.Context, origin, eduType string, content []byte) error {
	err := s.Engine.ReceiveEDU(ctx, origin, eduType, content)
	s.metrics.InboundEDU(eduType, err)
	return err
}

// Start opens every component from cfg (already validated: config.Load
// does it) and starts listening. On error, whatever was opened is closed
// again.
func Start(cfg *config.Config, opts Options) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	version := opts.Version
	if version == "" {
		version = "dev"
	}
	logger := opts.Logger
	s := &Server{cfg: cfg, logger: logger}
	defer func() {
		if err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.Close(ctx) // the start error is the one worth reporting
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}

	own, created, err := keys.LoadOrGenerate(cfg.DataDir, rand.Reader)
	if err != nil {
		return nil, err
	}
	s.keys = own
	signer := own.Current[0]
	keyLog := logger.Info().Str("key_id", signer.KeyID()).Str("public_key", rooms.EncodeBase64(signer.Public())).Int("old_keys", len(own.Old))
	if created {
		keyLog.Msg("generated a new signing key")
	} else {
		keyLog.Msg("signing key loaded")
	}

	tlsConfig, err := federationTLS(cfg, opts, logger)
	if err != nil {
		return nil, err
	}

	s.metrics = metrics.New()
	dbLog := logger.With().Str("component", "store").Logger()
	s.db, err = store.Open(context.Background(), cfg.DatabaseURL(), store.Options{Logger: &dbLog, ObserveTransaction: s.metrics.DatabaseTransaction})
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	s.closers = append(s.closers, func() error {
		if err := s.db.Close(); err != nil {
			return fmt.Errorf("close database: %w", err)
		}
		return nil
	})

	policy := federation.ServerPolicy{Allow: cfg.Federation.Allow, Deny: cfg.Federation.Deny}
	s.client, err = federation.NewClient(federation.ClientConfig{
		ServerName:            cfg.ServerName,
		Keys:                  own,
		CAFile:                cfg.Federation.CAFile,
		InsecureSkipVerify:    !cfg.Federation.VerifyTLS,
		AllowPrivateAddresses: cfg.Federation.AllowPrivateAddresses,
		Policy:                policy,
		Logger:                logger.With().Str("component", "federation_client").Logger(),
	})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() error { s.client.Close(); return nil })

	notaries := make([]keys.Notary, 0, len(cfg.Federation.TrustedKeyServers))
	for _, name := range cfg.Federation.TrustedKeyServers {
		notaries = append(notaries, keys.Notary{ServerName: name})
	}
	s.ring, err = keys.NewRing(keys.RingConfig{ServerName: cfg.ServerName, Own: own, Fetcher: s.metrics.CountingFetcher(s.client), Cache: s.db, Notaries: notaries})
	if err != nil {
		return nil, err
	}

	s.delivery = &homeserver.Delivery{
		ServerName: cfg.ServerName,
		Store:      s.db,
		Transport:  s.client,
		Logger:     logger.With().Str("component", "delivery").Logger(),

		ObserveAttempt: s.metrics.OutboundAttempt,
	}
	s.engine = &homeserver.Engine{
		ServerName:         cfg.ServerName,
		Signer:             own.Signer(cfg.ServerName),
		Store:              s.db,
		Keys:               s.ring,
		Remote:             s.client,
		Logger:             logger.With().Str("component", "engine").Logger(),
		OnQueued:           func(dests []string) { s.delivery.Notify(dests...) },
		DestinationAllowed: policy.Allowed,
		AutoRegisterUsers:  cfg.Host.AutoRegisterUsers,
		PartialStateJoins:  cfg.Federation.PartialStateJoins,

		ObservePersisted:       s.metrics.Persisted,
		ObserveStateResolution: s.metrics.StateResolved,
	}
	s.metrics.WatchSources(metrics.Sources{Delivery: s.delivery, Store: s.db})
	s.host = &homeserver.Host{
		Engine:             s.engine,
		Delivery:           s.delivery,
		DefaultRoomVersion: cfg.Rooms.DefaultVersion,
		AutoRegisterUsers:  cfg.Host.AutoRegisterUsers,
	}

	fed := federation.NewServer(cfg.ServerName, own)
	fed.KeyRing = s.ring
	fed.Policy = policy
	fed.MaxRequestBodyBytes = cfg.Federation.MaxRequestBodyBytes
	fed.Rooms = seenRooms{Engine: s.engine, delivery: s.delivery, metrics: s.metrics}
	fed.Directory = s.engine
	fed.Addr = cfg.Federation.Listen
	fed.TLSConfig = tlsConfig
	fed.WellKnownServer = cfg.Federation.WellKnownServer
	fed.Version = version
	fed.Logger = logger.With().Str("component", "federation").Logger()
	fed.ObserveRequest = s.metrics.FederationRequest

	// The senders live as long as the server; Close ends them.
	deliveryCtx, stopDelivery := context.WithCancel(context.Background())
	if err := s.delivery.Start(deliveryCtx); err != nil {
		stopDelivery()
		return nil, err
	}
	s.closers = append(s.closers, func() error {
		stopDelivery()
		s.delivery.Close()
		s.host.Close()
		s.engine.WaitPartialResyncs()
		return nil
	})
	if err := s.engine.StartPartialResyncs(deliveryCtx); err != nil {
		return nil, err
	}
	if err := fed.Open(); err != nil {
		return nil, err
	}
	s.federation = fed
	logger.Info().
		Str("server_name", cfg.ServerName).
		Str("listen", fed.ListenAddr().String()).
		Str("url", fed.URL()).
		Str("key_id", signer.KeyID()).
		Str("version", version).
		Str("default_room_version", cfg.Rooms.DefaultVersion).
		Msg("federation listening")

	if err := s.openHostAPI(); err != nil {
		return nil, err
	}

	// Metrics: a listener of its own when metrics.listen is set (/metrics
	// is on the host listener in any case).
	if cfg.Metrics.Listen != "" {
		s.metricsListener, err = s.metrics.Listen(cfg.Metrics.Listen)
		if err != nil {
			return nil, err
		}
		logger.Info().Str("listen", s.metricsListener.Addr().String()).Msg("metrics listening")
	}
	return s, nil
}

// openHostAPI starts the host plane's listener, with the configured token
// or one kept in the data directory.
func (s *Server) openHostAPI() error {
	cfg := s.cfg
	token := cfg.Host.Token
	if token == "" {
		var created bool
		var err error
		token, created, err = hostapi.LoadOrCreateToken(cfg.DataDir)
		if err != nil {
			return fmt.Errorf("host API token: %w", err)
		}
		if created {
			// Printed once, when made, so that whoever started the server
			// can copy it; afterwards it is only in the 0600 file.
			s.logger.Warn().Str("token", token).Str("file", filepath.Join(cfg.DataDir, hostapi.TokenFile)).
				Msg("generated a host API token; the host presents it as Authorization: Bearer <token>")
		}
	}
	api, err := hostapi.New(hostapi.Config{
		Host:           s.host,
		Cursors:        s.db,
		Token:          token,
		ServerName:     cfg.ServerName,
		WebhookURL:     cfg.Host.WebhookURL,
		WebhookSecret:  cfg.Host.WebhookSecret,
		Logger:         s.logger.With().Str("component", "hostapi").Logger(),
		ObserveRequest: s.metrics.HostRequest,
		Extra: map[string]http.Handler{
			"/healthz": http.HandlerFunc(healthz),
			"/readyz":  http.HandlerFunc(s.readyz),
			"/metrics": s.metrics.Handler(),
		},
	})
	if err != nil {
		return err
	}
	if err := api.Open(cfg.Host.Listen); err != nil {
		return err
	}
	s.hostAPI = api
	return nil
}

// Close stops the listeners, then the components in the reverse order of
// Start. ctx bounds the graceful drain of requests in flight.
func (s *Server) Close(ctx context.Context) error {
	var errs []error
	if s.hostAPI != nil {
		if err := s.hostAPI.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("host API listener: %w", err))
		}
	}
	if s.federation != nil {
		if err := s.federation.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("federation listener: %w", err))
		}
	}
	if s.metricsListener != nil {
		if err := s.metricsListener.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		s.metricsListener = nil
	}
	if err := s.closeComponents(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Server) closeComponents() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.closers = nil
	return errors.Join(errs...)
}

// Host is the host plane: the operations the host product performs as
// its local users (create rooms, join, send, read the event stream), the
// same ones the host API serves over HTTP.
func (s *Server) Host() *homeserver.Host { return s.host }

// Engine is the room engine, for programs that need more than Host.
func (s *Server) Engine() *homeserver.Engine { return s.engine }

// Delivery is the outbound delivery to other servers.
func (s *Server) Delivery() *homeserver.Delivery { return s.delivery }

// Store is the database.
func (s *Server) Store() *store.DB { return s.db }

// Client is the federation client other servers are called with.
func (s *Server) Client() *federation.Client { return s.client }

// Keys are the server's own signing keys.
func (s *Server) Keys() *keys.Own { return s.keys }

// HostAPI is the host plane's listener.
func (s *Server) HostAPI() *hostapi.Server { return s.hostAPI }

// Metrics are the server's Prometheus metrics, served at /metrics on the
// host listener; a program may register its own in Metrics().Registry().
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// MetricsListener is the listener of metrics.listen, nil when that is
// empty.
func (s *Server) MetricsListener() *metrics.Listener { return s.metricsListener }

// Federation is the public listener.
func (s *Server) Federation() *federation.Server { return s.federation }

// federationTLS returns the listener's TLS configuration: none for
// plain_http, the configured certificate, or a generated self-signed one.
func federationTLS(cfg *config.Config, opts Options, logger zerolog.Logger) (*tls.Config, error) {
	f := cfg.Federation
	switch {
	case f.PlainHTTP:
		logger.Warn().Msg("federation.plain_http is set: serving HTTP, expecting a reverse proxy to terminate TLS")
		return nil, nil
	case f.TLSCert != "" && opts.GetCertificate != nil:
		tlsConfig := federation.TLSConfig(tls.Certificate{})
		tlsConfig.Certificates = nil
		tlsConfig.GetCertificate = opts.GetCertificate
		return tlsConfig, nil
	case f.TLSCert != "":
		cert, err := tls.LoadX509KeyPair(f.TLSCert, f.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("federation.tls_cert / federation.tls_key: %w", err)
		}
		return federation.TLSConfig(cert), nil
	default:
		cert, created, err := federation.LoadOrCreateSelfSigned(cfg.DataDir, cfg.ServerName, time.Now())
		if err != nil {
			return nil, err
		}
		ev := logger.Warn().Str("not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
		if created {
			ev = ev.Bool("created", true)
		}
		ev.Msg("using a self-signed certificate: fine for local tests, other servers will reject it unless they skip verification")
		return federation.TLSConfig(cert), nil
	}
}
