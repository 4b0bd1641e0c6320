package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/ferry-matrix/ferry/rooms"
)

func init() {
	registerInspectTool("resolve", "resolve state sets with state resolution v2 / v2.1", runInspectResolve)
}

// maxResolveInput bounds what `ferry inspect resolve` reads from stdin.
const maxResolveInput = 256 << 20

// resolveInput is the layout of the state_resolution test vectors.
type resolveInput struct {
	RoomVersion string            `json:"room_version"`
	PDUs        []json.RawMessage `json:"pdus"`
	StateSets   [][]string        `json:"state_sets"`
}

func runInspectResolve(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ferry inspect resolve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ferry inspect resolve < input.json")
		fmt.Fprintln(stderr)
		fmt.Fprintln(stderr, `Reads {"room_version": "10"|"11"|"12", "pdus": [...], "state_sets": [[event_id, ...], ...]}`)
		fmt.Fprintln(stderr, "and prints the resolved state as {\"state\": {\"<type>|<state_key>\": \"<event_id>\"}}.")
		fmt.Fprintln(stderr, "A PDU with an event_id field is known by that ID (fixtures with readable IDs);")
		fmt.Fprintln(stderr, "otherwise its ID is computed. Version 11 input runs under version 10 rules")
		fmt.Fprintln(stderr, "(same algorithm, v2.0) with content.creator added to its create event.")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "ferry inspect resolve: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	state, err := inspectResolve(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "ferry inspect resolve: %v\n", err)
		return 1
	}
	flat := make(map[string]string, len(state))
	for k, id := range state {
		flat[k.Type+"|"+k.StateKey] = id
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(map[string]any{"state": flat}); err != nil {
		fmt.Fprintf(stderr, "ferry inspect resolve: %v\n", err)
		return 1
	}
	if _, err := stdout.Write(buf.Bytes()); err != nil {
		return 1
	}
	return 0
}

// inspectResolve parses the input and resolves its state sets.
func inspectResolve(stdin io.Reader) (rooms.StateMap, error) {
	data, err := io.ReadAll(io.LimitReader(stdin, maxResolveInput+1))
	if err != nil {
		return nil, fmt.Errorf("read input: %w", err)
	}
	if len(data) > maxResolveInput {
		return nil, fmt.Errorf("input is larger than %d bytes", maxResolveInput)
	}
	var in resolveInput
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("input is not the expected JSON object {room_version, pdus, state_sets}: %w", err)
	}
	if in.RoomVersion == "" {
		return nil, errors.New("room_version is missing")
	}
	if len(in.StateSets) == 0 {
		return nil, errors.New("state_sets is missing or empty")
	}
	v, err := rooms.LookupVersion(in.RoomVersion)
	addCreator := false
	if err != nil {
		// Version 11 resolves with v2.0, as version 10 does; its create
		// event names no creator, which version 10 rules require.
		standIn, ok := rooms.StateResStandIn(in.RoomVersion)
		if !ok {
			return nil, fmt.Errorf("room_version: %w (11 is accepted too, run under version 10 rules)", err)
		}
		v, addCreator = standIn, true
	}
	events := rooms.NewEventSet()
	for i, raw := range in.PDUs {
		var adjust func(map[string]any)
		if addCreator {
			adjust = addCreatorToCreate
		}
		ev, err := parseFixturePDU(v, raw, adjust)
		if err != nil {
			return nil, fmt.Errorf("pdus[%d]: %w", i, err)
		}
		if _, err := events.Event(ev.EventID()); err == nil {
			return nil, fmt.Errorf("pdus[%d]: event %s appears twice", i, ev.EventID())
		}
		events.Add(ev)
	}
	sets := make([]rooms.StateMap, len(in.StateSets))
	for i, ids := range in.StateSets {
		m := make(rooms.StateMap, len(ids))
		for _, id := range ids {
			ev, err := events.Event(id)
			if err != nil {
				return nil, fmt.Errorf("state_sets[%d]: %s is not among the pdus", i, id)
			}
			k, ok := rooms.StateTupleOf(ev)
			if !ok {
				return nil, fmt.Errorf("state_sets[%d]: %s is not a state event", i, id)
			}
			if other, dup := m[k]; dup && other != id {
				return nil, fmt.Errorf("state_sets[%d]: %s and %s both hold (%q, %q)", i, other, id, k.Type, k.StateKey)
			}
			m[k] = id
		}
		sets[i] = m
	}
	return rooms.ResolveState(v, sets, events, nil)
}

// addCreatorToCreate gives a create event the content.creator version 10
// rules require (its sender), for events of versions that dropped it.
func addCreatorToCreate(obj map[string]any) {
	if obj["type"] != "m.room.create" {
		return
	}
	if content, ok := obj["content"].(map[string]any); ok {
		if _, has := content["creator"]; !has {
			content["creator"] = obj["sender"]
		}
	}
}
