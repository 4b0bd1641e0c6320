package rooms

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"maps"
	"testing"
)

// srRoom builds valid room DAGs for the package's internal state
// resolution tests and benchmarks: every event gets the auth events the
// auth events selection picks from the state of its branch and is kept only
// if the authorization rules allow it there. Signed rooms hold real signed
// events (BuildEvent). Unsigned ones use hash-shaped IDs and skip ed25519
// and hashing, which keeps the setup of the 100,000-member benchmark to
// seconds; scenario and property tests use roomstest instead.
type srRoom struct {
	tb     testing.TB
	v      Version
	signed bool
	keys   map[string]SigningKey
	set    *EventSet
	events []*Event
	depth  map[string]int64
	roomID string
	ts     int64
	seq    uint64
}

// srBranch is one line of history: its state and its forward extremities.
type srBranch struct {
	state StateMap
	heads []string
}

func (b *srBranch) fork() *srBranch {
	return &srBranch{state: maps.Clone(b.state), heads: append([]string(nil), b.heads...)}
}

// newSRRoom creates a room of version v: create, the creator's join, the
// power levels pl (nil: InitialPowerLevelsContent) and public join rules.
func newSRRoom(tb testing.TB, v Version, signed bool, creator string, pl map[string]any) (*srRoom, *srBranch) {
	tb.Helper()
	r := &srRoom{tb: tb, v: v, signed: signed, keys: map[string]SigningKey{}, set: NewEventSet(), depth: map[string]int64{}}
	b := &srBranch{state: StateMap{}}
	content := map[string]any{"room_version": v.ID}
	if v.CreateHasCreator {
		content["creator"] = creator
		r.roomID = "!gen:" + serverOfID(creator)
	}
	create := r.mustSend(b, "m.room.create", StringPtr(""), creator, content)
	if r.roomID == "" {
		r.roomID = create.RoomID()
	}
	r.mustSend(b, "m.room.member", StringPtr(creator), creator, map[string]any{"membership": "join"})
	if pl == nil {
		pl = InitialPowerLevelsContent(v, creator)
	}
	r.mustSend(b, "m.room.power_levels", StringPtr(""), creator, pl)
	r.mustSend(b, "m.room.join_rules", StringPtr(""), creator, map[string]any{"join_rule": "public"})
	return r, b
}

// srPowerLevels is a power-levels content with schema defaults: users at
// the given levels, plus the creator at 100 where creators are not
// privileged (version 12 creators must not be listed).
func srPowerLevels(v Version, creator string, users map[string]int64) map[string]any {
	u := map[string]any{}
	if v.Creators != CreatorSenderPrivileged {
		u[creator] = int64(100)
	}
	for user, level := range users {
		u[user] = level
	}
	return map[string]any{"users": u}
}

// mustSend is send for events the test needs to succeed.
func (r *srRoom) mustSend(b *srBranch, typ string, sk *string, sender string, content map[string]any) *Event {
	r.tb.Helper()
	ev, err := r.send(b, typ, sk, sender, content)
	if err != nil {
		r.tb.Fatalf("%s from %s: %v", typ, sender, err)
	}
	return ev
}

// send builds an event on branch b and applies it if the auth rules allow
// it against b's state; a rejected event is returned with the AuthError and
// not kept.
func (r *srRoom) send(b *srBranch, typ string, sk *string, sender string, content map[string]any) (*Event, error) {
	tpl := EventTemplate{Type: typ, StateKey: sk, Sender: sender, Content: content, PrevEvents: b.heads, OriginServerTS: r.ts}
	if typ != "m.room.create" || r.v.RoomIDs != RoomIDFromCreate {
		tpl.RoomID = r.roomID
	}
	for _, p := range b.heads {
		if d := r.depth[p] + 1; d > tpl.Depth {
			tpl.Depth = d
		}
	}
	// The auth events selection reads the event itself (sender, type,
	// membership), so ask it of an unsigned draft first.
	draft := r.unsigned(tpl, "$draft")
	state := map[StateTuple]*Event{}
	if c, ok := b.state[CreateTuple]; ok {
		state[CreateTuple] = r.get(c)
	}
	for _, k := range AuthSelection(draft) {
		id, ok := b.state[k]
		if !ok {
			continue
		}
		state[k] = r.get(id)
		tpl.AuthEvents = append(tpl.AuthEvents, id)
	}
	if err := CheckAuth(draft, state); err != nil {
		return draft, err
	}
	r.ts++
	var ev *Event
	if r.signed {
		var err error
		if ev, err = BuildEvent(r.v, tpl, r.key(sender)); err != nil {
			r.tb.Fatal(err)
		}
	} else {
		r.seq++
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], r.seq)
		sum := sha256.Sum256(append([]byte(r.roomID), buf[:]...))
		ev = r.unsigned(tpl, "$"+EncodeBase64URL(sum[:]))
	}
	if err := CheckAuth(ev, state); err != nil {
		r.tb.Fatalf("%s passed auth as a draft but not built: %v", typ, err)
	}
	r.set.Add(ev)
	r.events = append(r.events, ev)
	r.depth[ev.EventID()] = tpl.Depth
	if k, ok := StateTupleOf(ev); ok {
		b.state[k] = ev.EventID()
	}
	b.heads = []string{ev.EventID()}
	return ev, nil
}

// unsigned builds tpl as an unsigned event known by id.
func (r *srRoom) unsigned(tpl EventTemplate, id string) *Event {
	obj := map[string]any{
		"type":             tpl.Type,
		"sender":           tpl.Sender,
		"content":          tpl.Content,
		"prev_events":      toAnyList(nonNil(tpl.PrevEvents)),
		"auth_events":      toAnyList(nonNil(tpl.AuthEvents)),
		"depth":            tpl.Depth,
		"origin_server_ts": tpl.OriginServerTS,
	}
	if tpl.StateKey != nil {
		obj["state_key"] = *tpl.StateKey
	}
	if tpl.RoomID != "" {
		obj["room_id"] = tpl.RoomID
	}
	raw, err := EncodeCanonical(obj)
	if err != nil {
		r.tb.Fatal(err)
	}
	ev, err := ParseEventTrusted(r.v, raw, id)
	if err != nil {
		r.tb.Fatal(err)
	}
	return ev
}

func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}

func (r *srRoom) get(id string) *Event {
	ev, err := r.set.Event(id)
	if err != nil {
		r.tb.Fatal(err)
	}
	return ev
}

// key returns the signing key of the sender's server, derived from its name.
func (r *srRoom) key(user string) SigningKey {
	server := serverOfID(user)
	k, ok := r.keys[server]
	if !ok {
		seed := sha256.Sum256([]byte("ferry state resolution test key " + server))
		k = SigningKey{ServerName: server, KeyID: "ed25519:1", Private: ed25519.NewKeyFromSeed(seed[:])}
		r.keys[server] = k
	}
	return k
}

// powerLevels returns a copy of the content of b's power-levels event with
// users[user] set to level (or removed when level < 0).
func (r *srRoom) powerLevels(b *srBranch, user string, level int64) map[string]any {
	content := cloneJSON(r.get(b.state[StateTuple{"m.room.power_levels", ""}]).Content())
	users, _ := content["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
		content["users"] = users
	}
	if level < 0 {
		delete(users, user)
	} else {
		users[user] = level
	}
	return content
}

// cloneJSON deep-copies a parsed JSON object.
func cloneJSON(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			out[k] = cloneJSON(sub)
		} else {
			out[k] = v
		}
	}
	return out
}
