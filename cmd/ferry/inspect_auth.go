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
	registerInspectTool("auth", "judge an event by the authorization rules against given auth events", runInspectAuth)
}

// maxAuthInput bounds what `ferry inspect auth` reads from stdin: the event
// and its auth events are a few PDUs of at most 64 KiB each.
const maxAuthInput = 16 << 20

// authInput is what `ferry inspect auth` reads.
type authInput struct {
	RoomVersion string            `json:"room_version"`
	Event       json.RawMessage   `json:"event"`
	AuthEvents  []json.RawMessage `json:"auth_events"`
}

// authVerdict is what `ferry inspect auth` prints.
type authVerdict struct {
	Allowed bool   `json:"allowed"`
	Reason  string `json:"reason,omitempty"`
}

func runInspectAuth(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ferry inspect auth", flag.ContinueOnError)
	fs.SetOutput(stderr)
	structural := fs.Bool("auth-events", false, "also apply the rules about the event's auth_events list (duplicates, selection, create presence, room); every event it lists must be given")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ferry inspect auth [-auth-events] < input.json")
		fmt.Fprintln(stderr)
		fmt.Fprintln(stderr, `Reads {"room_version": "10"|"12", "event": {PDU}, "auth_events": [{PDU}, ...]}`)
		fmt.Fprintln(stderr, "and judges the event by the authorization rules of its room version against")
		fmt.Fprintln(stderr, "the state the auth events form (include the m.room.create event, in version 12")
		fmt.Fprintln(stderr, "too). Prints {\"allowed\": true} or {\"allowed\": false, \"reason\": \"<rule>: <why>\"}")
		fmt.Fprintln(stderr, "and exits 0 either way; exits 1 when the input is unusable. A PDU with an")
		fmt.Fprintln(stderr, "event_id field is known by that ID (fixtures); otherwise its ID is computed.")
		fmt.Fprintln(stderr, "Signatures of the event itself are not checked here.")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "ferry inspect auth: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	verdict, err := inspectAuth(stdin, *structural)
	if err != nil {
		fmt.Fprintf(stderr, "ferry inspect auth: %v\n", err)
		return 1
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(verdict); err != nil {
		fmt.Fprintf(stderr, "ferry inspect auth: %v\n", err)
		return 1
	}
	if _, err := stdout.Write(buf.Bytes()); err != nil {
		return 1
	}
	return 0
}

// inspectAuth parses the input and judges its event. With structural it
// runs rooms.CheckAuthEvents on the auth events the event lists (the
// create event may be given unlisted, as version 12 requires); otherwise
// rooms.CheckAuth on the state all given auth events form.
func inspectAuth(stdin io.Reader, structural bool) (authVerdict, error) {
	data, err := io.ReadAll(io.LimitReader(stdin, maxAuthInput+1))
	if err != nil {
		return authVerdict{}, fmt.Errorf("read input: %w", err)
	}
	if len(data) > maxAuthInput {
		return authVerdict{}, fmt.Errorf("input is larger than %d bytes", maxAuthInput)
	}
	var in authInput
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return authVerdict{}, fmt.Errorf("input is not the expected JSON object {room_version, event, auth_events}: %w", err)
	}
	if in.RoomVersion == "" {
		return authVerdict{}, errors.New("room_version is missing")
	}
	if len(in.Event) == 0 {
		return authVerdict{}, errors.New("event is missing")
	}
	v, err := rooms.LookupVersion(in.RoomVersion)
	if err != nil {
		return authVerdict{}, fmt.Errorf("room_version: %w", err)
	}
	ev, err := parseFixturePDU(v, in.Event, nil)
	if err != nil {
		return authVerdict{}, fmt.Errorf("event: %w", err)
	}
	state := make(map[rooms.StateTuple]*rooms.Event, len(in.AuthEvents))
	listed := make(map[string]bool, len(ev.AuthEvents()))
	for _, id := range ev.AuthEvents() {
		listed[id] = true
	}
	var listedEvents []*rooms.Event
	var create *rooms.Event
	for i, raw := range in.AuthEvents {
		ae, err := parseFixturePDU(v, raw, nil)
		if err != nil {
			return authVerdict{}, fmt.Errorf("auth_events[%d]: %w", i, err)
		}
		k, ok := rooms.StateTupleOf(ae)
		if !ok {
			return authVerdict{}, fmt.Errorf("auth_events[%d]: %s is not a state event", i, ae.EventID())
		}
		if other := state[k]; other != nil {
			return authVerdict{}, fmt.Errorf("auth_events[%d]: %s and %s both hold (%q, %q); the auth state is ambiguous", i, other.EventID(), ae.EventID(), k.Type, k.StateKey)
		}
		state[k] = ae
		if k == rooms.CreateTuple {
			create = ae
		}
		if listed[ae.EventID()] {
			listedEvents = append(listedEvents, ae)
		}
	}
	if structural {
		err = rooms.CheckAuthEvents(ev, listedEvents, create, nil)
	} else {
		err = rooms.CheckAuth(ev, state)
	}
	var authErr *rooms.AuthError
	switch {
	case err == nil:
		return authVerdict{Allowed: true}, nil
	case errors.As(err, &authErr):
		return authVerdict{Allowed: false, Reason: authErr.Error()}, nil
	default:
		return authVerdict{}, err
	}
}
