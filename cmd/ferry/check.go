package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/ferry-matrix/ferry/config"
	"github.com/ferry-matrix/ferry/keys"
)

// defaultCheckTimeout bounds each network operation of `ferry check`.
const defaultCheckTimeout = 15 * time.Second

func init() {
	registerCommand("check", "test federation with a server: discovery, TLS, keys, version, make_join", runCheckCommand)
}

func runCheckCommand(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return checkMain(ctx, args, os.LookupEnv, stdout, stderr, nil)
}

const checkUsage = "usage: ferry check [--json] [--room ROOM_ID_OR_ALIAS] [--insecure] [--timeout D] [--ca-file PEM] [-config FILE] SERVER_NAME"

// checkMain parses the arguments, runs the check and prints the report.
// It returns 0 when federation with the server would work, 1 when not,
// 2 on a usage error. adjust, when set, changes the options before the
// run (tests point the resolver at loopback listeners with it).
func checkMain(ctx context.Context, args []string, env config.LookupEnv, stdout, stderr io.Writer, adjust func(*checkOptions)) int {
	set := flag.NewFlagSet("check", flag.ContinueOnError)
	set.SetOutput(stderr)
	set.Usage = func() {
		fmt.Fprintln(stderr, checkUsage)
		set.PrintDefaults()
	}
	asJSON := set.Bool("json", false, "print the report as JSON")
	room := set.String("room", "", "room ID or alias to try make_join in (needs a local Ferry identity to sign with)")
	insecure := set.Bool("insecure", false, "go on when certificates do not verify (as servers with verify_tls = false would)")
	timeout := set.Duration("timeout", defaultCheckTimeout, "time limit of each network operation")
	caFile := set.String("ca-file", "", "PEM bundle of extra trusted CAs")
	configPath := set.String("config", "", "Ferry configuration to sign make_join as (default ./"+defaultConfigFile+" if it exists, or FERRY_* variables)")

	// Flags may come before or after the server name.
	var positional []string
	rest := args
	for {
		if err := set.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if set.NArg() == 0 {
			break
		}
		positional = append(positional, set.Arg(0))
		rest = set.Args()[1:]
	}
	if len(positional) != 1 || *timeout <= 0 {
		fmt.Fprintln(stderr, checkUsage)
		return 2
	}

	identity, note, err := loadCheckIdentity(*configPath, env)
	if err != nil {
		fmt.Fprintf(stderr, "ferry check: %v\n", err)
		return 2
	}
	opts := checkOptions{
		serverName: positional[0],
		room:       *room,
		insecure:   *insecure,
		timeout:    *timeout,
		caFile:     *caFile,
		identity:   identity,
	}
	if adjust != nil {
		adjust(&opts)
	}
	report, err := runCheck(ctx, opts)
	if err != nil {
		fmt.Fprintf(stderr, "ferry check: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			fmt.Fprintf(stderr, "ferry check: %v\n", err)
			return 1
		}
	} else {
		if note != "" && *room != "" {
			fmt.Fprintln(stderr, note)
		}
		printCheckReport(stdout, report)
	}
	if !report.OK {
		return 1
	}
	return 0
}

// loadCheckIdentity finds the local Ferry to sign authenticated requests
// as: the configuration at path, ./ferry.toml, or FERRY_* variables, as
// `ferry serve` would read them, and the signing key in its data
// directory. It never creates a key: a key nobody publishes would only
// make the target fail to verify us. No configuration at all is not an
// error (nil identity and a note saying why).
func loadCheckIdentity(path string, env config.LookupEnv) (*checkIdentity, string, error) {
	if path == "" {
		if _, err := os.Stat(defaultConfigFile); err == nil {
			path = defaultConfigFile
		}
	}
	if path == "" {
		if _, set := env(config.EnvName("server_name")); !set {
			return nil, "ferry check: no Ferry configuration found (-config, ./" + defaultConfigFile + ", FERRY_SERVER_NAME): signed requests are skipped", nil
		}
	}
	cfg, err := config.Load(path, env)
	if err != nil {
		return nil, "", fmt.Errorf("configuration: %w", err)
	}
	keyPath := filepath.Join(cfg.DataDir, keys.SigningKeyFile)
	data, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Sprintf("ferry check: %s has no signing key yet (start ferry serve once): signed requests are skipped", cfg.DataDir), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("signing key: %w", err)
	}
	current, err := keys.ParseKeyFile(data)
	if err != nil {
		return nil, "", fmt.Errorf("signing key %s: %w", keyPath, err)
	}
	return &checkIdentity{serverName: cfg.ServerName, keys: &keys.Own{Current: current}}, "", nil
}

// checkMarks are the human output's marks per status.
var checkMarks = map[checkStatus]string{
	checkOK:   "✓",
	checkWarn: "!",
	checkFail: "✗",
	checkSkip: "-",
	checkInfo: "·",
}

// printCheckReport writes the human output: one line per step, indented
// detail lines under some, and the verdict.
func printCheckReport(w io.Writer, r *checkReport) {
	fmt.Fprintf(w, "ferry check %s", r.ServerName)
	if r.Origin != "" {
		fmt.Fprintf(w, " (signing as %s)", r.Origin)
	}
	fmt.Fprintln(w)
	for _, s := range r.Steps {
		fmt.Fprintf(w, "%s %-12s %s\n", checkMarks[s.Status], s.Name, terminalSafe(s.Summary))
		for _, line := range s.lines {
			fmt.Fprintf(w, "  %-12s   %s\n", "", terminalSafe(line))
		}
	}
	mark := checkMarks[checkOK]
	if !r.OK {
		mark = checkMarks[checkFail]
	}
	fmt.Fprintf(w, "%s %s\n", mark, terminalSafe(capitalize(r.Verdict)))
}

// terminalSafe escapes control characters: summaries quote what remote
// servers sent (error messages, certificate names, bodies), which must
// not be able to move the cursor or recolour an operator's terminal.
func terminalSafe(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteString(`\ufffd`)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
