package main

import (
	"fmt"
	"io"
	"sort"
)

// inspectTools holds the `ferry inspect <tool>` sub-verbs: offline checks
// that read JSON on stdin and explain what Ferry makes of it.
var inspectTools = map[string]command{}

func registerInspectTool(name, summary string, run func(args []string, stdin io.Reader, stdout, stderr io.Writer) int) {
	if _, dup := inspectTools[name]; dup {
		panic("ferry: inspect tool registered twice: " + name)
	}
	inspectTools[name] = command{summary: summary, run: run}
}

func init() {
	registerCommand("inspect", "check events, auth and state resolution offline (JSON on stdin)", runInspect)
}

func runInspect(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		inspectUsage(stderr)
		return 2
	}
	tool, ok := inspectTools[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ferry inspect: unknown tool %q\n\n", args[0])
		inspectUsage(stderr)
		return 2
	}
	return tool.run(args[1:], stdin, stdout, stderr)
}

func inspectUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: ferry inspect <tool> [flags] < input.json")
	fmt.Fprintln(w)
	names := make([]string, 0, len(inspectTools))
	for name := range inspectTools {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-10s %s\n", name, inspectTools[name].summary)
	}
}
