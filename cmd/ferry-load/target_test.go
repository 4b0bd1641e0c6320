package main

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/federation"
	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/hostapi"
	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/store"
)

// target is a real Ferry server measured by the tests, wired as
// cmd/ferry's serve wires one (store, key ring, federation client, engine,
// federation server over TLS on loopback), trusting self-signed
// certificates and private addresses as test deployments do.
type target struct {
	Name   string
	DB     *store.DB
	Engine *homeserver.Engine
}

// startTarget starts a Ferry server that stops when tb ends. Logs at
// error level go to the test log.
func startTarget(tb testing.TB) *target {
	tb.Helper()
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	name := ln.Addr().String()
	dir := tb.TempDir()
	log := zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.ErrorLevel).With().Str("server", name).Logger()
	fail := func(err error) {
		tb.Helper()
		ln.Close()
		tb.Fatal(err)
	}
	own, _, err := keys.LoadOrGenerate(dir, rand.Reader)
	if err != nil {
		fail(err)
	}
	dbLog := log.With().Str("component", "store").Logger()
	db, err := store.Open(ctx, filepath.Join(dir, "ferry.db"), store.Options{Logger: &dbLog})
	if err != nil {
		fail(err)
	}
	tb.Cleanup(func() { db.Close() })
	client, err := federation.NewClient(federation.ClientConfig{
		ServerName: name, Keys: own, InsecureSkipVerify: true, AllowPrivateAddresses: true,
		Logger: log.With().Str("component", "federation_client").Logger(),
	})
	if err != nil {
		fail(err)
	}
	tb.Cleanup(client.Close)
	ring, err := keys.NewRing(keys.RingConfig{ServerName: name, Own: own, Fetcher: client, Cache: db})
	if err != nil {
		fail(err)
	}
	engine := &homeserver.Engine{
		ServerName: name, Signer: own.Signer(name), Store: db, Keys: ring, Remote: client,
		Logger: log.With().Str("component", "engine").Logger(),
	}
	fed := federation.NewServer(name, own)
	fed.KeyRing = ring
	fed.Rooms = engine
	fed.Directory = engine
	fed.Logger = log.With().Str("component", "federation").Logger()
	cert, _, err := federation.LoadOrCreateSelfSigned(dir, name, time.Now())
	if err != nil {
		fail(err)
	}
	srv := &http.Server{Handler: fed.Handler(), TLSConfig: federation.TLSConfig(cert), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("target %s stopped: %v", name, err)
		}
	}()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		<-done
	})
	return &target{Name: name, DB: db, Engine: engine}
}

// hostAPI serves the target's host API over plain HTTP on loopback, as
// ferry serve does, and returns its base URL and token. Unknown users
// are registered on first use.
func (tg *target) hostAPI(tb testing.TB) (string, string) {
	tb.Helper()
	const token = "ferry-load-test-token"
	srv, err := hostapi.New(hostapi.Config{
		Host:  &homeserver.Host{Engine: tg.Engine, AutoRegisterUsers: true},
		Token: token, ServerName: tg.Name,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	tb.Cleanup(ts.Close)
	return ts.URL, token
}

// testContext is a context bounded by the test's deadline, or 2 minutes.
func testContext(tb testing.TB) context.Context {
	deadline := time.Now().Add(2 * time.Minute)
	if t, ok := tb.(*testing.T); ok {
		if d, ok := t.Deadline(); ok && d.Before(deadline) {
			deadline = d.Add(-5 * time.Second)
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	tb.Cleanup(cancel)
	return ctx
}
