// Command ferry-load measures a Matrix homeserver over federation by
// acting as other homeservers on loopback.
//
//	ferry-load send    joins a room on the target as one or more remote
//	                   servers and sends pre-signed /send transactions at a
//	                   chosen concurrency: accepted PDUs/s, transaction
//	                   latency percentiles, errors.
//	ferry-load bigroom builds a synthetic room of N members (realistic
//	                   state, full auth chains, signed in parallel) and
//	                   serves it as its resident servers, so the target's
//	                   join of a big room can be timed.
//
// It speaks only the server-server API (and, optionally, Ferry's host API
// to set a room up or start a join), and depends on no Ferry package but
// rooms and keys for building and signing events, so it measures any
// homeserver the same way.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes a subcommand and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "send":
		return runSend(ctx, args[1:], stdout, stderr)
	case "bigroom":
		return runBigRoom(ctx, args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "ferry-load: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ferry-load <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	fmt.Fprintln(w, "  send      join a room on the target as remote servers and send /send transactions")
	fmt.Fprintln(w, "  bigroom   serve a synthetic room of N members as its resident servers")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "ferry-load <command> -h lists a command's flags.")
}
