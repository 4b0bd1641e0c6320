package main

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
)

// roomSpec describes the synthetic room bigroom builds.
type roomSpec struct {
	Version rooms.Version
	// Members is the number of joined members, the creator included.
	Members int
	// Admins get power level 100 and Moderators 50 (the first members
	// after the creator).
	Admins, Moderators int
	// ProfileChanges is the fraction of members who change their
	// displayname after joining: a second join event whose auth events
	// name their first, so the auth chain holds events the state does not,
	// as in real rooms.
	ProfileChanges float64
	// Messages are sent by members after the joins, so /backfill and
	// /get_missing_events have a timeline to walk.
	Messages int
	// Name and Topic become m.room.name and m.room.topic.
	Name, Topic string
}

// builtRoom is the room's events in DAG order (a single line: each event's
// prev_events names the one before it, as a busy room's timeline mostly
// is) and its room ID.
type builtRoom struct {
	RoomID string
	Events []*rooms.Event
}

// userOf names member i (0 is the creator) on server i mod len(servers):
// memberships are spread over every resident server name.
func userOf(i int, servers []rooms.SigningKey) (string, rooms.SigningKey) {
	key := servers[i%len(servers)]
	if i == 0 {
		return "@creator:" + key.ServerName, key
	}
	return fmt.Sprintf("@user%06d:%s", i, key.ServerName), key
}

// aliasOf is the room's canonical alias, on its first resident server,
// which answers /query/directory for it.
func aliasOf(server string) string { return "#bigroom:" + server }

// buildRoom generates spec's room with members spread over servers (each
// server's key signs the events of its users). Event IDs are computed in
// order, cheaply; the signing runs on every CPU afterwards.
func buildRoom(spec roomSpec, servers []rooms.SigningKey, now time.Time) (*builtRoom, error) {
	if spec.Members < 1 {
		return nil, errors.New("a room needs at least one member")
	}
	if len(servers) == 0 {
		return nil, errors.New("a room needs at least one resident server")
	}
	v := spec.Version
	creator, creatorKey := userOf(0, servers)
	state := map[rooms.StateTuple]string{}
	var drafts []draft
	var roomID, prev string
	depth := int64(0)
	ts := now.Add(-time.Duration(spec.Members*2+spec.Messages+16) * time.Millisecond).UnixMilli()
	add := func(typ string, stateKey *string, sender string, key rooms.SigningKey, content map[string]any) error {
		depth++
		ts++
		t := rooms.EventTemplate{
			Type: typ, StateKey: stateKey, Sender: sender, RoomID: roomID, Content: content,
			Depth: depth, OriginServerTS: ts,
		}
		if prev != "" {
			t.PrevEvents = []string{prev}
		}
		for _, k := range rooms.AuthSelectionFor(v, t) {
			if id, ok := state[k]; ok {
				t.AuthEvents = append(t.AuthEvents, id)
			}
		}
		d, err := newDraft(v, t, key)
		if err != nil {
			return err
		}
		drafts = append(drafts, d)
		prev = d.id
		if stateKey != nil {
			state[rooms.StateTuple{Type: typ, StateKey: *stateKey}] = d.id
		}
		return nil
	}

	createContent := map[string]any{"room_version": v.ID}
	if v.CreateHasCreator {
		createContent["creator"] = creator
	}
	if v.RoomIDs == rooms.RoomIDOpaque {
		roomID = "!bigroom" + fmt.Sprint(now.UnixNano()) + ":" + creatorKey.ServerName
	}
	if err := add("m.room.create", rooms.StringPtr(""), creator, creatorKey, createContent); err != nil {
		return nil, err
	}
	if roomID == "" {
		roomID = string(rooms.RoomIDFromCreateEventID(rooms.EventID(drafts[0].id)))
	}
	join := func(i int, displayname string) error {
		user, key := userOf(i, servers)
		return add("m.room.member", rooms.StringPtr(user), user, key, map[string]any{"membership": "join", "displayname": displayname})
	}
	if err := join(0, "Room creator"); err != nil {
		return nil, err
	}
	pl := rooms.InitialPowerLevelsContent(v, creator)
	users, _ := pl["users"].(map[string]any)
	for i := 1; i < spec.Members && i <= spec.Admins+spec.Moderators; i++ {
		user, _ := userOf(i, servers)
		if i <= spec.Admins {
			users[user] = int64(100)
		} else {
			users[user] = int64(50)
		}
	}
	setup := []struct {
		typ     string
		content map[string]any
	}{
		{"m.room.power_levels", pl},
		{"m.room.join_rules", map[string]any{"join_rule": "public"}},
		{"m.room.history_visibility", map[string]any{"history_visibility": "shared"}},
		{"m.room.guest_access", map[string]any{"guest_access": "forbidden"}},
		{"m.room.name", map[string]any{"name": spec.Name}},
		{"m.room.topic", map[string]any{"topic": spec.Topic}},
		{"m.room.canonical_alias", map[string]any{"alias": aliasOf(creatorKey.ServerName)}},
	}
	for _, s := range setup {
		if err := add(s.typ, rooms.StringPtr(""), creator, creatorKey, s.content); err != nil {
			return nil, err
		}
	}
	// Every k-th member changes profile right after joining.
	every := 0
	if spec.ProfileChanges > 0 {
		every = max(1, int(1/spec.ProfileChanges+0.5))
	}
	for i := 1; i < spec.Members; i++ {
		if err := join(i, fmt.Sprintf("Member %d", i)); err != nil {
			return nil, err
		}
		if every > 0 && i%every == 0 {
			if err := join(i, fmt.Sprintf("Member %d (away)", i)); err != nil {
				return nil, err
			}
		}
	}
	for m := range spec.Messages {
		i := (m*7919 + 1) % spec.Members
		user, key := userOf(i, servers)
		if err := add("m.room.message", nil, user, key, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d from member %d", m, i)}); err != nil {
			return nil, err
		}
	}
	events, err := signDrafts(v, drafts)
	if err != nil {
		return nil, fmt.Errorf("build room: %w", err)
	}
	return &builtRoom{RoomID: roomID, Events: events}, nil
}

// memberIDs returns the users whose membership is join in state.
func memberIDs(state map[rooms.StateTuple]*rooms.Event) []string {
	var out []string
	for k, ev := range state {
		if k.Type == "m.room.member" && ev.Membership() == "join" {
			out = append(out, k.StateKey)
		}
	}
	slices.Sort(out)
	return out
}
