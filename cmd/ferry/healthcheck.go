package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ferry-matrix/ferry/config"
)

// healthcheckTimeout bounds one probe by default; Docker's HEALTHCHECK in
// the Dockerfile gives the command 5 s, so a probe gives up first and says
// why instead of being killed silently.
const healthcheckTimeout = 3 * time.Second

// healthcheckBodyLimit caps how much of the answer is read and quoted in
// the one-line report.
const healthcheckBodyLimit = 200

func init() {
	registerCommand("healthcheck", "probe a running server's /healthz (or /readyz) on the host API listener; exit 0 if healthy", runHealthcheck)
}

func runHealthcheck(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	return healthcheck(args, os.LookupEnv, stdout, stderr)
}

// healthcheck finds the host API listener from the same configuration
// `ferry serve` reads (the -config file or ./ferry.toml, then FERRY_*
// variables), GETs /healthz there (/readyz with -ready), and reports one
// line: on stdout with status 0 when the server answers 200, on stderr
// with status 1 otherwise. It is what the Dockerfile's HEALTHCHECK runs,
// so it needs no shell, curl or wget in the image.
func healthcheck(args []string, env config.LookupEnv, stdout, stderr io.Writer) int {
	set := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	set.SetOutput(stderr)
	set.Usage = func() {
		fmt.Fprintln(stderr, "usage: ferry healthcheck [-config file] [-ready] [-timeout d]")
		fmt.Fprintln(stderr, "\nGETs /healthz (or /readyz) on the host API listener (host.listen) and exits 0 if it answers 200, else 1.")
		fmt.Fprintln(stderr)
		set.PrintDefaults()
	}
	configPath := set.String("config", "", "configuration file (default ./"+defaultConfigFile+" if it exists)")
	ready := set.Bool("ready", false, "check /readyz (database open, keys loaded, listeners up) instead of /healthz (process alive)")
	timeout := set.Duration("timeout", healthcheckTimeout, "give up after this long")
	if err := set.Parse(args); err != nil {
		return 2
	}
	if set.NArg() > 0 {
		set.Usage()
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
		fmt.Fprintf(stderr, "unhealthy: invalid configuration: %s\n", healthReportLine(err.Error()))
		return 1
	}

	endpoint := "/healthz"
	if *ready {
		endpoint = "/readyz"
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	where, status, body, err := probeHostAPI(ctx, cfg.Host.Listen, endpoint)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "unhealthy: %s on %s: %s\n", endpoint, where, healthReportLine(err.Error()))
		return 1
	case status != http.StatusOK:
		fmt.Fprintf(stderr, "unhealthy: %s on %s: HTTP %d %s\n", endpoint, where, status, healthReportLine(body))
		return 1
	default:
		fmt.Fprintf(stdout, "ok: %s on %s: %s\n", endpoint, where, healthReportLine(body))
		return 0
	}
}

// probeHostAPI GETs path from the host API listening at listen (host:port
// or unix:/path). where names what was dialled, for the report. A listener
// bound to every address (0.0.0.0, [::] or an empty host) is probed on
// loopback, which it also answers on.
func probeHostAPI(ctx context.Context, listen, path string) (where string, status int, body string, err error) {
	transport := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	dialer := &net.Dialer{}
	var url string
	if socket, ok := strings.CutPrefix(listen, "unix:"); ok {
		where = "unix:" + socket
		transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socket)
		}
		// The host part is not used to connect; it only fills the
		// request's Host header.
		url = "http://localhost" + path
	} else {
		host, port, err := net.SplitHostPort(listen)
		if err != nil {
			return listen, 0, "", fmt.Errorf("host.listen %q: %w", listen, err)
		}
		switch host {
		case "", "0.0.0.0":
			host = "127.0.0.1"
		case "::":
			host = "::1"
		}
		where = net.JoinHostPort(host, port)
		transport.DialContext = dialer.DialContext
		url = "http://" + where + path
	}
	client := &http.Client{
		Transport: transport,
		// A health endpoint answers itself; following a redirect would
		// probe something else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return where, 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return where, 0, "", errors.New("no answer before the timeout")
		}
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			// "dial tcp 127.0.0.1:8009: connect: connection refused"
			// says what happened without the URL repeated around it.
			return where, 0, "", opErr
		}
		return where, 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, healthcheckBodyLimit))
	if err != nil {
		return where, resp.StatusCode, "", fmt.Errorf("HTTP %d, reading the body: %w", resp.StatusCode, err)
	}
	return where, resp.StatusCode, string(raw), nil
}

// healthReportLine folds s onto a single line, so that Docker's health log and
// systemd's journal show each probe as one entry.
func healthReportLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
