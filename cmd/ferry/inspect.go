package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/ferry-matrix/ferry/rooms"
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

// parseFixturePDU parses one PDU given to an inspect tool, after adjust
// (when not nil) has had its say on the parsed object. A PDU that carries
// an event_id field is known by that ID and taken as it is (test cases
// use readable IDs and unsigned events); any other gets the full format
// checks and a computed ID.
func parseFixturePDU(v rooms.Version, raw json.RawMessage, adjust func(obj map[string]any)) (*rooms.Event, error) {
	tree, err := rooms.ParseJSON(raw)
	if err != nil {
		return nil, err
	}
	obj, ok := tree.(map[string]any)
	if !ok {
		return nil, errors.New("not a JSON object")
	}
	if adjust != nil {
		adjust(obj)
	}
	rawID, hasID := obj["event_id"]
	if !hasID {
		return rooms.NewEventFromObject(v, obj)
	}
	id, ok := rawID.(string)
	if !ok || len(id) < 2 || id[0] != '$' {
		return nil, fmt.Errorf("event_id %v is not an event ID", rawID)
	}
	delete(obj, "event_id")
	canonical, err := rooms.EncodeCanonical(obj)
	if err != nil {
		return nil, err
	}
	return rooms.ParseEventTrusted(v, canonical, id)
}
