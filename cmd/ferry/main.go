// Command ferry is the Ferry homeserver binary: it serves federation
// (`ferry serve`), writes configuration (`ferry init`), and offers tools for
// operators and testers (`ferry inspect ...`, `ferry version`).
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
)

// command is one top-level verb of the ferry binary.
type command struct {
	summary string
	// run executes the verb with the arguments after its name and returns
	// the process exit status.
	run func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

// commands holds every verb; files register theirs from init so each verb
// lives beside its own code.
var commands = map[string]command{}

func registerCommand(name, summary string, run func(args []string, stdin io.Reader, stdout, stderr io.Writer) int) {
	if _, dup := commands[name]; dup {
		panic("ferry: command registered twice: " + name)
	}
	commands[name] = command{summary: summary, run: run}
}

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func runMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ferry: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	return cmd.run(args[1:], stdin, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ferry <command> [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-13s %s\n", name, commands[name].summary)
	}
}
