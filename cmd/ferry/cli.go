package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/ferry-matrix/ferry/config"
	"github.com/ferry-matrix/ferry/hostapi/client"
)

// The host API verbs (users, rooms, send, events, destinations) are thin:
// each parses its arguments, calls one or two routes through
// hostapi/client and prints the answer, for people by default and as JSON
// with --json.

// hostTokenFile is where `ferry serve` keeps the generated host API token
// inside the data directory (it creates it; the CLI only reads it).
const hostTokenFile = "host_token"

// hostVerb is one CLI verb over the host API.
type hostVerb struct {
	name    string // as typed after "ferry": "rooms create"
	args    string // the usage after the name
	summary string
	// minArgs and maxArgs bound the positional arguments; maxArgs < 0
	// means no bound.
	minArgs, maxArgs int
	// setup declares the verb's own flags on set and returns the code that
	// runs once they are parsed.
	setup func(set *flag.FlagSet) func(ctx context.Context, call *hostCall) error
}

// hostCall is one run of a host verb: its positional arguments, the
// configuration, a client of the server, and where to print.
type hostCall struct {
	args   []string
	cfg    *config.Config
	client *client.Client
	// address and token built client, for verbs that need another one.
	address, token string
	json           bool
	stdout         io.Writer
	stderr         io.Writer
}

// usageError is a mistake in the command line, found after flag parsing:
// the verb prints it with its usage and exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitStatusError ends a verb with a status other than 0 after it has
// printed what went wrong itself (rooms create with failed invites).
type exitStatusError struct{ status int }

func (e *exitStatusError) Error() string { return fmt.Sprintf("exit status %d", e.status) }

// registerHostGroup registers a verb with sub-verbs ("ferry rooms create").
func registerHostGroup(name, summary string, verbs []hostVerb) {
	registerCommand(name, summary, func(args []string, _ io.Reader, stdout, stderr io.Writer) int {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runHostGroup(ctx, name, verbs, args, os.LookupEnv, stdout, stderr)
	})
}

// registerHostVerb registers a verb without sub-verbs ("ferry send").
func registerHostVerb(verb hostVerb) {
	registerCommand(verb.name, verb.summary, func(args []string, _ io.Reader, stdout, stderr io.Writer) int {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runHostVerb(ctx, verb, args, os.LookupEnv, stdout, stderr)
	})
}

// runHostGroup picks the sub-verb named by args[0] and runs it.
func runHostGroup(ctx context.Context, group string, verbs []hostVerb, args []string, env config.LookupEnv, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		groupUsage(stderr, group, verbs)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, verb := range verbs {
		if verb.name == group+" "+args[0] {
			return runHostVerb(ctx, verb, args[1:], env, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "ferry %s: unknown command %q\n\n", group, args[0])
	groupUsage(stderr, group, verbs)
	return 2
}

// argumentNote explains the shorthands every host verb accepts.
const argumentNote = `
USER is a user ID (@alice:example.org) or, for users of this server, its
localpart (alice). ROOM is a room ID (!...) or an alias (#name:server).
Flags may come before or after the arguments; after "--" nothing is a flag.
`

func groupUsage(w io.Writer, group string, verbs []hostVerb) {
	fmt.Fprintf(w, "usage: ferry %s <command> [arguments] [-config file] [--json]\n\ncommands:\n", group)
	sorted := append([]hostVerb(nil), verbs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, verb := range sorted {
		fmt.Fprintf(w, "  %-10s %s\n", strings.TrimPrefix(verb.name, group+" "), verb.summary)
	}
	fmt.Fprint(w, argumentNote)
}

// runHostVerb parses args for verb (flags may come before or after the
// positional arguments), connects and runs it, and turns the outcome into
// an exit status: 0 done, 1 refused or failed, 2 a usage mistake.
func runHostVerb(ctx context.Context, verb hostVerb, args []string, env config.LookupEnv, stdout, stderr io.Writer) int {
	set := flag.NewFlagSet(verb.name, flag.ContinueOnError)
	set.SetOutput(stderr)
	configPath := set.String("config", "", "configuration file (default ./"+defaultConfigFile+" if it exists)")
	asJSON := set.Bool("json", false, "print the host API's answer as JSON, one value per line")
	run := verb.setup(set)
	set.Usage = func() {
		fmt.Fprintf(stderr, "usage: ferry %s %s\n", verb.name, verb.args)
		set.PrintDefaults()
		fmt.Fprint(stderr, argumentNote)
	}
	flagArgs, positional := splitFlags(set, args)
	if err := set.Parse(flagArgs); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if len(positional) < verb.minArgs || verb.maxArgs >= 0 && len(positional) > verb.maxArgs {
		fmt.Fprintf(stderr, "usage: ferry %s %s\n", verb.name, verb.args)
		return 2
	}

	cfg, err := loadCLIConfig(*configPath, env)
	if err != nil {
		fmt.Fprintf(stderr, "ferry: invalid configuration:\n  %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 1
	}
	address := hostAddress(cfg)
	// Without a token the verb still runs: its own usage checks come
	// first, and a server that is not running deserves that hint more.
	// Only the server's M_MISSING_TOKEN is then explained by tokenErr.
	token, tokenErr := hostToken(cfg)
	c, err := client.New(address, token)
	if err != nil {
		fmt.Fprintf(stderr, "ferry: %v\n", err)
		return 1
	}
	call := &hostCall{args: positional, cfg: cfg, client: c, address: address, token: token, json: *asJSON, stdout: stdout, stderr: stderr}
	err = run(ctx, call)
	if tokenErr != nil && client.ErrorCode(err) == "M_MISSING_TOKEN" {
		fmt.Fprintf(stderr, "ferry: %v\n", tokenErr)
		return 1
	}
	return exitStatus(err, verb, stderr)
}

// exitStatus prints err the way the CLI promises and returns the status.
func exitStatus(err error, verb hostVerb, stderr io.Writer) int {
	var usage *usageError
	var status *exitStatusError
	var unreachable *client.UnreachableError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "ferry %s: %s\nusage: ferry %s %s\n", verb.name, usage.msg, verb.name, verb.args)
		return 2
	case errors.As(err, &status):
		return status.status
	case errors.As(err, &unreachable):
		fmt.Fprintf(stderr, "ferry: cannot reach the host API at %s: is `ferry serve` running? (%v)\n", unreachable.Address, unreachable.Err)
		return 1
	default:
		// A *client.Error prints as "M_CODE: message".
		fmt.Fprintf(stderr, "ferry: %v\n", err)
		return 1
	}
}

// splitFlags separates flags (with their values) from positional
// arguments wherever they appear, since the standard flag package stops
// at the first positional one. Everything after "--" is positional.
func splitFlags(set *flag.FlagSet, args []string) (flags, positional []string) {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			positional = append(positional, arg)
			continue
		}
		flags = append(flags, arg)
		name := strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := set.Lookup(name)
		if f == nil {
			continue // set.Parse reports it
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	return flags, positional
}

// stringList is a flag that may be repeated (--invite A --invite B).
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// loadCLIConfig reads the configuration as `ferry serve` does: the file
// given, else ./ferry.toml when it exists, then FERRY_* variables.
func loadCLIConfig(path string, env config.LookupEnv) (*config.Config, error) {
	if path == "" {
		if _, err := os.Stat(defaultConfigFile); err == nil {
			path = defaultConfigFile
		}
	}
	return config.Load(path, env)
}

// hostAddress is where the CLI reaches the host API: host.listen, with a
// listener on every interface reached over loopback.
func hostAddress(cfg *config.Config) string {
	if _, ok := cfg.HostListenUnix(); ok {
		return cfg.Host.Listen
	}
	host, port, err := net.SplitHostPort(cfg.Host.Listen)
	if err != nil {
		return cfg.Host.Listen // validated by config.Load; client.New reports it otherwise
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// hostToken finds the host API token: host.token (or FERRY_HOST_TOKEN,
// already applied by config.Load), else the file `ferry serve` generated
// in the data directory. The CLI never creates it: a token only the CLI
// knows would lock the server's host out.
func hostToken(cfg *config.Config) (string, error) {
	if cfg.Host.Token != "" {
		return cfg.Host.Token, nil
	}
	path := filepath.Join(cfg.DataDir, hostTokenFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("no host API token: host.token and %s are not set and %s does not exist (`ferry serve` creates it on its first start; run the CLI with the same configuration and working directory)", config.EnvName("host.token"), path)
	}
	if err != nil {
		return "", fmt.Errorf("host API token: %w", err)
	}
	token := strings.TrimSpace(string(raw))
	if token == "" {
		return "", fmt.Errorf("host API token: %s is empty", path)
	}
	return token, nil
}

// userID completes a bare localpart ("alice") into a user ID of this
// server ("@alice:example.org"); anything else is passed on as given for
// the server to judge.
func (c *hostCall) userID(s string) string {
	if s == "" || strings.HasPrefix(s, "@") || strings.Contains(s, ":") {
		return s
	}
	return "@" + s + ":" + c.cfg.ServerName
}

// userIDs completes every entry of list with userID.
func (c *hostCall) userIDs(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = c.userID(s)
	}
	return out
}

// alias completes a bare alias name ("lobby") into an alias of this
// server ("#lobby:example.org").
func (c *hostCall) alias(s string) string {
	if s == "" || strings.HasPrefix(s, "#") || strings.Contains(s, ":") {
		return s
	}
	return "#" + s + ":" + c.cfg.ServerName
}

// roomID resolves a room argument: an alias (#...) is looked up, anything
// else is taken as a room ID.
func (c *hostCall) roomID(ctx context.Context, s string) (string, error) {
	if !strings.HasPrefix(s, "#") {
		return s, nil
	}
	target, err := c.client.Alias(ctx, s)
	if err != nil {
		return "", err
	}
	return target.RoomID, nil
}

// printJSON writes v as one line of JSON.
func (c *hostCall) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// require reports a missing required flag as a usage error.
func require(flagName, value string) error {
	if value == "" {
		return usageErrorf("--%s is required", flagName)
	}
	return nil
}

// runHostCLI runs the host verb named by args[0] ("users", "rooms",
// "send", "events", "destinations") with env as the environment: the
// entry point of the tests, which must not touch the process environment
// or signals.
func runHostCLI(ctx context.Context, args []string, env config.LookupEnv, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: ferry users|rooms|send|events|destinations ...")
		return 2
	}
	switch args[0] {
	case "users":
		return runHostGroup(ctx, "users", usersVerbs, args[1:], env, stdout, stderr)
	case "rooms":
		return runHostGroup(ctx, "rooms", roomsVerbs, args[1:], env, stdout, stderr)
	}
	for _, verb := range []hostVerb{sendVerb, eventsVerb, destinationsVerb} {
		if verb.name == args[0] {
			return runHostVerb(ctx, verb, args[1:], env, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "ferry: %q is not a host API verb\n", args[0])
	return 2
}
