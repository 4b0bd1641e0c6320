package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/config"
	"github.com/ferry-matrix/ferry/federation"
	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// defaultConfigFile is read by `ferry serve` when -config is not given and
// the file exists; without it the defaults and the environment apply.
const defaultConfigFile = "ferry.toml"

// shutdownTimeout bounds the graceful drain on SIGINT/SIGTERM.
const shutdownTimeout = 30 * time.Second

func init() {
	registerCommand("serve", "run the homeserver", runServe)
}

func runServe(args []string, _ io.Reader, _, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, args, os.LookupEnv, stderr, nil)
}

// serve runs the server until ctx ends. ready, if set, is called once
// everything listens (tests use it to find the addresses).
func serve(ctx context.Context, args []string, env config.LookupEnv, stderr io.Writer, ready func(*instance)) int {
	set := flag.NewFlagSet("serve", flag.ContinueOnError)
	set.SetOutput(stderr)
	configPath := set.String("config", "", "configuration file (default ./"+defaultConfigFile+" if it exists)")
	if err := set.Parse(args); err != nil {
		return 2
	}
	if set.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: ferry serve [-config file]")
		return 2
	}
	path := *configPath
	if path == "" {
		if _, err := os.Stat(defaultConfigFile); err == nil {
			path = defaultConfigFile
		}
	}
	cfg, err := config.Load(path, env)
	if err != nil {
		fmt.Fprintf(stderr, "ferry serve: invalid configuration:\n  %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 1
	}

	logger := newLogger(cfg.Log, stderr)
	if path != "" {
		logger.Info().Str("file", path).Msg("configuration loaded")
	}
	for _, name := range config.UnknownEnv(os.Environ()) {
		logger.Warn().Str("variable", name).Msg("environment variable matches no configuration key; ignored")
	}
	inst, err := start(cfg, logger)
	if err != nil {
		logger.Error().Err(err).Msg("start failed")
		fmt.Fprintf(stderr, "ferry serve: %v\n", err)
		return 1
	}
	if ready != nil {
		ready(inst)
	}
	<-ctx.Done()
	logger.Info().Msg("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := inst.Close(shutdownCtx); err != nil {
		logger.Error().Err(err).Msg("shutdown")
		return 1
	}
	logger.Info().Msg("stopped")
	return 0
}

// instance is one running server: the wiring of every component, in the
// order they depend on each other.
type instance struct {
	keys     *keys.Own
	db       *store.DB
	client   *federation.Client
	engine   *homeserver.Engine
	delivery *homeserver.Delivery
	// stopDelivery ends the lifetime of the delivery's senders.
	stopDelivery context.CancelFunc
	federation   *federation.Server
}

// seenRooms is the engine as the federation server's room handler, noting
// every origin that sends a transaction as reachable, which ends its
// outbound backoff.
type seenRooms struct {
	*homeserver.Engine
	delivery *homeserver.Delivery
}

// The federation server registers the membership endpoints only for a
// room handler that serves them; these make losing one a build error.
var (
	_ federation.MembershipHandler = seenRooms{}
	_ federation.LeaveHandler      = seenRooms{}
	_ federation.InviteHandler     = seenRooms{}
	_ federation.KnockHandler      = seenRooms{}
)

func (s seenRooms) TransactionResponse(ctx context.Context, origin, txnID string) ([]byte, bool, error) {
	s.delivery.DestinationSeen(origin)
	return s.Engine.TransactionResponse(ctx, origin, txnID)
}

// start builds and opens every component from cfg. On error, whatever was
// opened is closed again.
func start(cfg *config.Config, logger zerolog.Logger) (*instance, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}

	own, created, err := keys.LoadOrGenerate(cfg.DataDir, rand.Reader)
	if err != nil {
		return nil, err
	}
	signer := own.Current[0]
	keyLog := logger.Info().Str("key_id", signer.KeyID()).Str("public_key", rooms.EncodeBase64(signer.Public())).Int("old_keys", len(own.Old))
	if created {
		keyLog.Msg("generated a new signing key")
	} else {
		keyLog.Msg("signing key loaded")
	}

	tlsConfig, err := federationTLS(cfg, logger)
	if err != nil {
		return nil, err
	}

	dbLog := logger.With().Str("component", "store").Logger()
	db, err := store.Open(context.Background(), cfg.DatabaseURL(), store.Options{Logger: &dbLog})
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}

	client, err := federation.NewClient(federation.ClientConfig{
		ServerName:            cfg.ServerName,
		Keys:                  own,
		CAFile:                cfg.Federation.CAFile,
		InsecureSkipVerify:    !cfg.Federation.VerifyTLS,
		AllowPrivateAddresses: cfg.Federation.AllowPrivateAddresses,
		Policy:                federation.ServerPolicy{Allow: cfg.Federation.Allow, Deny: cfg.Federation.Deny},
		Logger:                logger.With().Str("component", "federation_client").Logger(),
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	notaries := make([]keys.Notary, 0, len(cfg.Federation.TrustedKeyServers))
	for _, name := range cfg.Federation.TrustedKeyServers {
		notaries = append(notaries, keys.Notary{ServerName: name})
	}
	ring, err := keys.NewRing(keys.RingConfig{ServerName: cfg.ServerName, Own: own, Fetcher: client, Cache: db, Notaries: notaries})
	if err != nil {
		client.Close()
		db.Close()
		return nil, err
	}

	policy := federation.ServerPolicy{Allow: cfg.Federation.Allow, Deny: cfg.Federation.Deny}
	delivery := &homeserver.Delivery{
		ServerName: cfg.ServerName,
		Store:      db,
		Transport:  client,
		Logger:     logger.With().Str("component", "delivery").Logger(),
	}
	engine := &homeserver.Engine{
		ServerName:         cfg.ServerName,
		Signer:             own.Signer(cfg.ServerName),
		Store:              db,
		Keys:               ring,
		Remote:             client,
		Logger:             logger.With().Str("component", "engine").Logger(),
		OnQueued:           func(dests []string) { delivery.Notify(dests...) },
		DestinationAllowed: policy.Allowed,
	}

	fed := federation.NewServer(cfg.ServerName, own)
	fed.KeyRing = ring
	fed.Policy = policy
	fed.MaxRequestBodyBytes = cfg.Federation.MaxRequestBodyBytes
	fed.Rooms = seenRooms{Engine: engine, delivery: delivery}
	fed.Directory = engine
	fed.Addr = cfg.Federation.Listen
	fed.TLSConfig = tlsConfig
	fed.WellKnownServer = cfg.Federation.WellKnownServer
	fed.Version = versionString()
	fed.Logger = logger.With().Str("component", "federation").Logger()
	// The senders live as long as the server; Close ends them.
	deliveryCtx, stopDelivery := context.WithCancel(context.Background())
	if err := delivery.Start(deliveryCtx); err != nil {
		stopDelivery()
		client.Close()
		db.Close()
		return nil, err
	}
	if err := fed.Open(); err != nil {
		stopDelivery()
		delivery.Close()
		client.Close()
		db.Close()
		return nil, err
	}
	logger.Info().
		Str("server_name", cfg.ServerName).
		Str("listen", fed.ListenAddr().String()).
		Str("url", fed.URL()).
		Str("key_id", signer.KeyID()).
		Str("version", versionString()).
		Str("default_room_version", cfg.Rooms.DefaultVersion).
		Msg("federation listening")
	return &instance{keys: own, db: db, client: client, engine: engine, delivery: delivery, stopDelivery: stopDelivery, federation: fed}, nil
}

// Close shuts the components down in the reverse order of start.
func (i *instance) Close(ctx context.Context) error {
	err := i.federation.Close(ctx)
	i.stopDelivery()
	i.delivery.Close()
	i.client.Close()
	if dbErr := i.db.Close(); dbErr != nil && err == nil {
		err = fmt.Errorf("close database: %w", dbErr)
	}
	return err
}

// federationTLS returns the listener's TLS configuration: none for
// plain_http, the configured certificate, or a generated self-signed one.
func federationTLS(cfg *config.Config, logger zerolog.Logger) (*tls.Config, error) {
	f := cfg.Federation
	switch {
	case f.PlainHTTP:
		logger.Warn().Msg("federation.plain_http is set: serving HTTP, expecting a reverse proxy to terminate TLS")
		return nil, nil
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

// newLogger builds the process logger: JSON, or human-readable console
// output when log.format is "console" or "auto" on a terminal.
func newLogger(c config.Log, w io.Writer) zerolog.Logger {
	f, isFile := w.(*os.File)
	terminal := isFile && isatty.IsTerminal(f.Fd())
	if c.Format == "console" || c.Format == "auto" && terminal {
		// Colours only where a terminal will interpret them.
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !terminal}
	}
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil {
		// config.Validate admits only names ParseLevel knows.
		level = zerolog.InfoLevel
	}
	if level < zerolog.GlobalLevel() {
		// zerolog filters below its global level (debug) first.
		zerolog.SetGlobalLevel(level)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}
