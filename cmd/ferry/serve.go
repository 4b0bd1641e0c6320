package main

import (
	"context"
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

	"github.com/ferry-matrix/ferry"
	"github.com/ferry-matrix/ferry/config"
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
func serve(ctx context.Context, args []string, env config.LookupEnv, stderr io.Writer, ready func(*ferry.Server)) int {
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
	getCertificate, stopReload, err := reloadableCertificate(cfg, logger)
	if err != nil {
		logger.Error().Err(err).Msg("start failed")
		fmt.Fprintf(stderr, "ferry serve: %v\n", err)
		return 1
	}
	defer stopReload()
	inst, err := ferry.Start(cfg, ferry.Options{Logger: logger, Version: versionString(), GetCertificate: getCertificate})
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
