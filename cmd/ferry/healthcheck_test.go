package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry"
	"github.com/ferry-matrix/ferry/config"
)

// healthServer answers /healthz and /readyz on ln the way the host API
// listener does: alive always, ready as told.
func healthServer(t *testing.T, ln net.Listener, ready bool) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("{\n  \"status\": \"starting\",\n  \"database\": false\n}\n"))
			return
		}
		w.Write([]byte(`{"status":"ready"}`))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func runHealthcheckWith(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	// DataDir is set so that config validation never depends on the
	// working directory of the test.
	full := map[string]string{"FERRY_DATA_DIR": t.TempDir()}
	for k, v := range env {
		full[k] = v
	}
	code = healthcheck(args, func(key string) (string, bool) { v, ok := full[key]; return v, ok }, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHealthcheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	healthServer(t, ln, false)
	env := map[string]string{"FERRY_HOST_LISTEN": addr}

	code, stdout, stderr := runHealthcheckWith(t, env)
	if code != 0 || stdout != "ok: /healthz on "+addr+": {\"status\":\"ok\"}\n" || stderr != "" {
		t.Errorf("healthy: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	code, stdout, stderr = runHealthcheckWith(t, env, "-ready")
	want := "unhealthy: /readyz on " + addr + `: HTTP 503 { "status": "starting", "database": false }` + "\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("not ready: exit %d, stdout %q, stderr %q, want %q", code, stdout, stderr, want)
	}

	// A listener on every address is probed on loopback.
	_, port, _ := net.SplitHostPort(addr)
	code, stdout, _ = runHealthcheckWith(t, map[string]string{"FERRY_HOST_LISTEN": "0.0.0.0:" + port, "FERRY_HOST_TOKEN": "t"})
	if code != 0 || !strings.HasPrefix(stdout, "ok: /healthz on 127.0.0.1:"+port) {
		t.Errorf("0.0.0.0: exit %d, stdout %q", code, stdout)
	}
}

func TestHealthcheck_Ready(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	healthServer(t, ln, true)
	code, stdout, stderr := runHealthcheckWith(t, map[string]string{"FERRY_HOST_LISTEN": ln.Addr().String()}, "--ready")
	if code != 0 || !strings.HasPrefix(stdout, "ok: /readyz on ") || !strings.HasSuffix(stdout, `{"status":"ready"}`+"\n") {
		t.Errorf("ready: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestHealthcheck_UnixSocket(t *testing.T) {
	// Unix socket paths are limited to ~108 bytes; t.TempDir() can be
	// longer, so the socket goes in a short directory of its own.
	dir, err := os.MkdirTemp("", "ferry-hc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "host.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	healthServer(t, ln, true)

	// The address comes from a config file this time, as with -config.
	configFile := filepath.Join(t.TempDir(), "ferry.toml")
	doc := "data_dir = \"" + t.TempDir() + "\"\n[host]\nlisten = \"unix:" + socket + "\"\n"
	if err := os.WriteFile(configFile, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runHealthcheckWith(t, nil, "-config", configFile)
	if code != 0 || stdout != "ok: /healthz on unix:"+socket+": {\"status\":\"ok\"}\n" {
		t.Errorf("unix socket: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestHealthcheck_Failures(t *testing.T) {
	// A port nothing listens on: bind one and close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"nothing listening", map[string]string{"FERRY_HOST_LISTEN": closed}, nil, 1,
			"unhealthy: /healthz on " + closed + ": dial tcp " + closed + ": connect: connection refused\n"},
		{"no socket", map[string]string{"FERRY_HOST_LISTEN": "unix:/nonexistent/ferry.sock"}, []string{"-ready"}, 1,
			"unhealthy: /readyz on unix:/nonexistent/ferry.sock: dial unix /nonexistent/ferry.sock: connect: no such file or directory\n"},
		{"invalid configuration", map[string]string{"FERRY_HOST_LISTEN": "8009"}, nil, 1,
			`unhealthy: invalid configuration: host.listen: "8009": expected host:port`},
		{"missing config file", nil, []string{"-config", "/nonexistent/ferry.toml"}, 1,
			"unhealthy: invalid configuration: config file: open /nonexistent/ferry.toml: no such file or directory\n"},
		{"stray argument", nil, []string{"now"}, 2, "usage: ferry healthcheck"},
		{"unknown flag", nil, []string{"-fast"}, 2, "flag provided but not defined: -fast"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runHealthcheckWith(t, tt.env, tt.args...)
			if code != tt.code || stdout != "" || !strings.HasPrefix(stderr, tt.want) && !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, stdout, stderr, tt.code, tt.want)
			}
			if tt.code == 1 && strings.Count(stderr, "\n") != 1 {
				t.Errorf("reason is not one line: %q", stderr)
			}
		})
	}
}

// TestHealthcheck_Registered checks the verb the Dockerfile's HEALTHCHECK
// runs exists under that name.
func TestHealthcheck_Registered(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runMain([]string{"healthcheck", "-h"}, nil, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "-ready") {
		t.Errorf("ferry healthcheck -h: exit %d, %q", code, stderr.String())
	}
}

// TestHealthcheck_RealServer probes a whole Ferry server started in
// process with the configuration the probe reads too: alive and ready
// while it runs, refused once it has stopped.
func TestHealthcheck_RealServer(t *testing.T) {
	env := map[string]string{
		"FERRY_DATA_DIR":          t.TempDir(),
		"FERRY_SERVER_NAME":       "health.test",
		"FERRY_FEDERATION_LISTEN": "127.0.0.1:0",
		"FERRY_HOST_LISTEN":       "127.0.0.1:0",
	}
	cfg, err := config.Load("", func(key string) (string, bool) { v, ok := env[key]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ferry.Start(cfg, ferry.Options{Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	// The probe is told the port the host API got.
	env["FERRY_HOST_LISTEN"] = srv.HostAPI().Addr().String()

	code, stdout, stderr := runHealthcheckWith(t, env)
	if code != 0 || !strings.HasPrefix(stdout, "ok: /healthz on "+env["FERRY_HOST_LISTEN"]) {
		t.Errorf("healthz: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runHealthcheckWith(t, env, "-ready")
	if code != 0 || !strings.Contains(stdout, `"status":"ready"`) {
		t.Errorf("readyz: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	if err := srv.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runHealthcheckWith(t, env)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "connection refused") {
		t.Errorf("after Close: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
