// Package roomstest builds real, signed Matrix rooms for tests: every event
// is made by rooms.BuildEvent, hashed and signed with a deterministic key of
// its sender's server, and names its prev_events and auth_events the way a
// homeserver would (the room's forward extremities; rooms.AuthSelection over
// the tracked state). Tests may override any of that to build invalid
// events, build events without adding them to the room (to check that they
// are rejected), and fork the room at any earlier event to build
// concurrent branches for state resolution.
//
// A Room is not safe for concurrent use. Forks share the room's event
// registry.
package roomstest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
)

// Test users, one per server, plus a second user on a.test.
const (
	Alice = "@alice:a.test"
	Ann   = "@ann:a.test" // same server as Alice
	Bob   = "@bob:b.test"
	Carol = "@carol:c.test"
	Dave  = "@dave:d.test"
	Eve   = "@eve:e.test"
)

// KeyID is the key ID of every test server key.
const KeyID = "ed25519:test"

// IdentityServer is the server name of the test identity server, whose key
// signs third-party invites.
const IdentityServer = "id.test"

var keyCache sync.Map // server name -> rooms.SigningKey

// Key returns the signing key of a test server. The key is derived from the
// server name, so it is the same in every test run.
func Key(server string) rooms.SigningKey {
	if k, ok := keyCache.Load(server); ok {
		return k.(rooms.SigningKey)
	}
	seed := sha256.Sum256([]byte("ferry roomstest signing key for " + server))
	k := rooms.SigningKey{ServerName: server, KeyID: KeyID, Private: ed25519.NewKeyFromSeed(seed[:])}
	keyCache.Store(server, k)
	return k
}

// UserKey returns the key of the server of user.
func UserKey(user string) rooms.SigningKey { return Key(ServerOf(user)) }

// IdentityKey returns the identity server's key that signs third-party
// invites (entity IdentityServer, key ID "ed25519:0").
func IdentityKey() rooms.SigningKey {
	k := Key(IdentityServer)
	k.KeyID = "ed25519:0"
	return k
}

// ServerOf returns the server part of a user or room ID.
func ServerOf(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		return id[i+1:]
	}
	return ""
}

// Keys is a rooms.KeyLookup that knows the key of every test server (any
// name) under KeyID, valid at any time.
type Keys struct{}

var _ rooms.KeyLookup = Keys{}

// VerifyKey returns Key(server)'s public key for KeyID.
func (Keys) VerifyKey(server, keyID string, ts int64) (ed25519.PublicKey, error) {
	if keyID != KeyID {
		return nil, fmt.Errorf("roomstest: unknown key %s of %s", keyID, server)
	}
	return Key(server).PublicKey(), nil
}

// Spec describes an event to build in a Room. Zero fields get the value a
// homeserver would choose.
type Spec struct {
	Type     string
	StateKey *string // nil for a non-state event
	Sender   string
	Content  map[string]any
	Redacts  string // target of an m.room.redaction
	// PrevEvents: nil means the room's forward extremities.
	PrevEvents []string
	// AuthEvents: nil means the events rooms.AuthSelection picks from the
	// room's state.
	AuthEvents []string
	// Depth: 0 means one more than the deepest prev event.
	Depth int64
	// OriginServerTS: 0 means the room's clock (which then ticks).
	OriginServerTS int64
	// Signer: nil means the key of the sender's server.
	Signer *rooms.SigningKey
	// ExtraSigners sign the event after Signer (for example the
	// authorising server of a restricted join).
	ExtraSigners []rooms.SigningKey
}

// Options configure NewRoom.
type Options struct {
	// Creator sends the create event; default Alice.
	Creator string
	// RoomID is the room ID in versions whose room IDs are chosen by the
	// creator; default "!room:" + the creator's server. Ignored where the
	// room ID derives from the create event.
	RoomID string
	// AdditionalCreators go into content.additional_creators where the
	// version has privileged creators.
	AdditionalCreators []string
	// CreateContent adds keys to the create event's content (for example
	// "m.federate": false).
	CreateContent map[string]any
	// PowerLevels is the first power-levels content; nil means
	// rooms.InitialPowerLevelsContent.
	PowerLevels map[string]any
	// JoinRule is the initial join rule; "" means "public".
	JoinRule string
	// Minimal stops after the create event and the creator's join: no
	// power levels, no join rules.
	Minimal bool
}

// Room is a room under construction: its tracked current state, forward
// extremities and every event built in it.
type Room struct {
	tb      testing.TB
	Version rooms.Version
	// ID is the room ID.
	ID string
	// Creator is the create event's sender.
	Creator string

	reg         *registry
	state       map[rooms.StateTuple]*rooms.Event
	cur         *snapshot
	extremities []string
}

// registry holds what a room and its forks share.
type registry struct {
	events map[string]*rooms.Event
	order  []*rooms.Event
	after  map[string]*snapshot // state after each added event
	clock  int64
	create *rooms.Event
}

// snapshot is a persistent state map: a parent plus one change, with a
// full copy every snapshotEvery changes so lookups stay cheap.
type snapshot struct {
	parent *snapshot
	full   map[rooms.StateTuple]*rooms.Event // set on full snapshots
	key    rooms.StateTuple
	ev     *rooms.Event
	chain  int
}

const snapshotEvery = 64

func (s *snapshot) materialise() map[rooms.StateTuple]*rooms.Event {
	var deltas []*snapshot
	for s != nil && s.full == nil {
		deltas = append(deltas, s)
		s = s.parent
	}
	out := map[rooms.StateTuple]*rooms.Event{}
	if s != nil {
		for k, v := range s.full {
			out[k] = v
		}
	}
	for i := len(deltas) - 1; i >= 0; i-- {
		out[deltas[i].key] = deltas[i].ev
	}
	return out
}

func fullSnapshot(state map[rooms.StateTuple]*rooms.Event) *snapshot {
	cp := make(map[rooms.StateTuple]*rooms.Event, len(state))
	for k, v := range state {
		cp[k] = v
	}
	return &snapshot{full: cp}
}

// NewRoom creates a room of version v: the create event, the creator's
// join and, unless opts.Minimal, the power levels and join rules. Build
// failures end the test through tb.
func NewRoom(tb testing.TB, v rooms.Version, opts Options) *Room {
	tb.Helper()
	creator := opts.Creator
	if creator == "" {
		creator = Alice
	}
	r := &Room{
		tb:      tb,
		Version: v,
		Creator: creator,
		reg: &registry{
			events: map[string]*rooms.Event{},
			after:  map[string]*snapshot{},
			clock:  1_700_000_000_000,
		},
		state: map[rooms.StateTuple]*rooms.Event{},
		cur:   &snapshot{full: map[rooms.StateTuple]*rooms.Event{}},
	}
	if v.RoomIDs == rooms.RoomIDOpaque {
		r.ID = opts.RoomID
		if r.ID == "" {
			r.ID = "!room:" + ServerOf(creator)
		}
	}
	content := map[string]any{"room_version": v.ID}
	if v.CreateHasCreator {
		content["creator"] = creator
	}
	if len(opts.AdditionalCreators) > 0 {
		list := make([]any, len(opts.AdditionalCreators))
		for i, c := range opts.AdditionalCreators {
			list[i] = c
		}
		content["additional_creators"] = list
	}
	for k, val := range opts.CreateContent {
		content[k] = val
	}
	create := r.Send(Spec{Type: "m.room.create", StateKey: rooms.StringPtr(""), Sender: creator, Content: content})
	r.reg.create = create
	if r.ID == "" {
		r.ID = create.RoomID()
	}
	r.Join(creator)
	if opts.Minimal {
		return r
	}
	pl := opts.PowerLevels
	if pl == nil {
		pl = rooms.InitialPowerLevelsContent(v, creator)
	}
	r.SetPowerLevels(creator, pl)
	rule := opts.JoinRule
	if rule == "" {
		rule = "public"
	}
	r.SetJoinRule(creator, rule)
	return r
}

// TB returns the testing.TB the room reports build failures to.
func (r *Room) TB() testing.TB { return r.tb }

// WithTB returns a view of the room (same state, extremities and registry)
// that reports failures to tb, for use in subtests.
func (r *Room) WithTB(tb testing.TB) *Room {
	cp := *r
	cp.tb = tb
	cp.state = copyState(r.state)
	cp.extremities = append([]string(nil), r.extremities...)
	return &cp
}

func copyState(s map[rooms.StateTuple]*rooms.Event) map[rooms.StateTuple]*rooms.Event {
	out := make(map[rooms.StateTuple]*rooms.Event, len(s))
	for k, v := range s {
		out[k] = v
	}
	return out
}

// Create returns the room's create event.
func (r *Room) Create() *rooms.Event { return r.reg.create }

// State returns a copy of the room's current tracked state.
func (r *Room) State() map[rooms.StateTuple]*rooms.Event { return copyState(r.state) }

// StateEvent returns the current state event for (typ, stateKey), or nil.
func (r *Room) StateEvent(typ, stateKey string) *rooms.Event {
	return r.state[rooms.StateTuple{Type: typ, StateKey: stateKey}]
}

// StateAfter returns the state after the event id was added (nil if it was
// never added).
func (r *Room) StateAfter(id string) map[rooms.StateTuple]*rooms.Event {
	s, ok := r.reg.after[id]
	if !ok {
		return nil
	}
	return s.materialise()
}

// Extremities returns the room's forward extremities, the prev_events of
// the next event by default.
func (r *Room) Extremities() []string { return append([]string(nil), r.extremities...) }

// Event returns a built event by ID, or nil.
func (r *Room) Event(id string) *rooms.Event { return r.reg.events[id] }

// Lookup returns a built event by ID, for code that takes a lookup
// function.
func (r *Room) Lookup(id string) (*rooms.Event, bool) {
	ev, ok := r.reg.events[id]
	return ev, ok
}

// Events returns every event added or registered in the room and its
// forks, in the order they were built.
func (r *Room) Events() []*rooms.Event { return append([]*rooms.Event(nil), r.reg.order...) }

// AuthEventsOf returns the events ev lists in auth_events that the room
// knows, in listed order.
func (r *Room) AuthEventsOf(ev *rooms.Event) []*rooms.Event {
	out := make([]*rooms.Event, 0, len(ev.AuthEvents()))
	for _, id := range ev.AuthEvents() {
		if ae := r.reg.events[id]; ae != nil {
			out = append(out, ae)
		}
	}
	return out
}

// Fork returns a new view of the room positioned just after the event id:
// its state is the state after id and its only forward extremity is id.
// Events built on the fork join the shared registry; the original room's
// state and extremities are unaffected.
func (r *Room) Fork(id string) *Room {
	r.tb.Helper()
	s, ok := r.reg.after[id]
	if !ok {
		r.tb.Fatalf("roomstest: fork at %s: the event was not added to the room", id)
		return nil
	}
	return &Room{
		tb: r.tb, Version: r.Version, ID: r.ID, Creator: r.Creator, reg: r.reg,
		state: s.materialise(), cur: s, extremities: []string{id},
	}
}

// At returns a new view of the room with the given state and forward
// extremities, for building an event on a state the test computed (for
// example the resolved state of a merge).
func (r *Room) At(prevEvents []string, state map[rooms.StateTuple]*rooms.Event) *Room {
	return &Room{
		tb: r.tb, Version: r.Version, ID: r.ID, Creator: r.Creator, reg: r.reg,
		state: copyState(state), cur: fullSnapshot(state), extremities: append([]string(nil), prevEvents...),
	}
}

// Build builds and signs the event s describes on the room's current state
// and extremities without adding it to the room. Failures end the test.
func (r *Room) Build(s Spec) *rooms.Event {
	r.tb.Helper()
	ev, err := r.build(s)
	if err != nil {
		r.tb.Fatalf("roomstest: %v", err)
		return nil
	}
	return ev
}

func (r *Room) build(s Spec) (*rooms.Event, error) {
	ts := s.OriginServerTS
	if ts == 0 {
		r.reg.clock++
		ts = r.reg.clock
	}
	prev := s.PrevEvents
	if prev == nil {
		prev = append([]string{}, r.extremities...)
	}
	depth := s.Depth
	if depth == 0 {
		for _, id := range prev {
			if p := r.reg.events[id]; p != nil && p.Depth() > depth {
				depth = p.Depth()
			}
		}
		depth++
	}
	roomID := r.ID
	if s.Type == "m.room.create" && r.Version.RoomIDs == rooms.RoomIDFromCreate {
		roomID = ""
	}
	t := rooms.EventTemplate{
		Type: s.Type, StateKey: s.StateKey, Sender: s.Sender, RoomID: roomID,
		Content: s.Content, PrevEvents: prev, Depth: depth, OriginServerTS: ts,
		Redacts: s.Redacts,
	}
	t.AuthEvents = s.AuthEvents
	if t.AuthEvents == nil {
		t.AuthEvents = []string{}
		for _, tuple := range rooms.AuthSelectionFor(r.Version, t) {
			if ae := r.state[tuple]; ae != nil {
				t.AuthEvents = append(t.AuthEvents, ae.EventID())
			}
		}
	}
	key := UserKey(s.Sender)
	if s.Signer != nil {
		key = *s.Signer
	}
	ev, err := rooms.BuildEvent(r.Version, t, key)
	if err != nil {
		return nil, err
	}
	for _, extra := range s.ExtraSigners {
		if ev, err = Countersign(ev, extra); err != nil {
			return nil, err
		}
	}
	return ev, nil
}

// Countersign returns ev with a further signature by key (as a resident
// server adds to a restricted join). The event ID does not change.
func Countersign(ev *rooms.Event, key rooms.SigningKey) (*rooms.Event, error) {
	obj := make(map[string]any, len(ev.Object()))
	for k, val := range ev.Object() {
		obj[k] = val
	}
	if err := rooms.SignEvent(ev.Version(), obj, key); err != nil {
		return nil, err
	}
	return rooms.NewEventFromObject(ev.Version(), obj)
}

// Add adds a built event to the room: it is registered, becomes a forward
// extremity in place of its prev events, and, if it is a state event,
// updates the tracked state. Add does not check authorization.
func (r *Room) Add(ev *rooms.Event) {
	r.Register(ev)
	if t, ok := rooms.StateTupleOf(ev); ok {
		r.state[t] = ev
		if r.cur.chain+1 >= snapshotEvery {
			r.cur = fullSnapshot(r.state)
		} else {
			r.cur = &snapshot{parent: r.cur, key: t, ev: ev, chain: r.cur.chain + 1}
		}
	}
	r.reg.after[ev.EventID()] = r.cur
	prev := map[string]bool{}
	for _, id := range ev.PrevEvents() {
		prev[id] = true
	}
	ext := r.extremities[:0:0]
	for _, id := range r.extremities {
		if !prev[id] && id != ev.EventID() {
			ext = append(ext, id)
		}
	}
	r.extremities = append(ext, ev.EventID())
}

// Register records an event in the registry (so Event, Lookup and
// AuthEventsOf find it) without changing state or extremities, as for a
// rejected event.
func (r *Room) Register(ev *rooms.Event) {
	if _, dup := r.reg.events[ev.EventID()]; dup {
		return
	}
	r.reg.events[ev.EventID()] = ev
	r.reg.order = append(r.reg.order, ev)
}

// Send builds the event s describes and adds it to the room.
func (r *Room) Send(s Spec) *rooms.Event {
	r.tb.Helper()
	ev := r.Build(s)
	if ev != nil {
		r.Add(ev)
	}
	return ev
}

// Member describes an m.room.member event by sender about target.
func Member(sender, target, membership string) Spec {
	return Spec{Type: "m.room.member", StateKey: rooms.StringPtr(target), Sender: sender,
		Content: map[string]any{"membership": membership}}
}

// State describes a state event.
func State(sender, typ, stateKey string, content map[string]any) Spec {
	return Spec{Type: typ, StateKey: rooms.StringPtr(stateKey), Sender: sender, Content: content}
}

// Message describes an m.room.message with a text body.
func Message(sender, body string) Spec {
	return Spec{Type: "m.room.message", Sender: sender, Content: map[string]any{"msgtype": "m.text", "body": body}}
}

// PowerLevels describes an m.room.power_levels event.
func PowerLevels(sender string, content map[string]any) Spec {
	return State(sender, "m.room.power_levels", "", content)
}

// JoinRules describes an m.room.join_rules event; allow is the list of
// conditions of a restricted rule (nil for none).
func JoinRules(sender, rule string, allow []any) Spec {
	content := map[string]any{"join_rule": rule}
	if allow != nil {
		content["allow"] = allow
	}
	return State(sender, "m.room.join_rules", "", content)
}

// Redaction describes an m.room.redaction of target.
func Redaction(sender, target string) Spec {
	return Spec{Type: "m.room.redaction", Sender: sender, Redacts: target, Content: map[string]any{"reason": "test"}}
}

// RestrictedJoin describes user's join authorised by via: content names
// via in join_authorised_via_users_server and via's server countersigns.
func RestrictedJoin(user, via string) Spec {
	s := Member(user, user, "join")
	s.Content["join_authorised_via_users_server"] = via
	s.ExtraSigners = []rooms.SigningKey{UserKey(via)}
	return s
}

// Join adds user's join.
func (r *Room) Join(user string) *rooms.Event {
	r.tb.Helper()
	return r.Send(Member(user, user, "join"))
}

// Invite adds sender's invite of target.
func (r *Room) Invite(sender, target string) *rooms.Event {
	r.tb.Helper()
	return r.Send(Member(sender, target, "invite"))
}

// Leave adds user's own leave.
func (r *Room) Leave(user string) *rooms.Event {
	r.tb.Helper()
	return r.Send(Member(user, user, "leave"))
}

// Kick adds sender's kick of target (a leave sent by someone else; also
// an unban when target is banned).
func (r *Room) Kick(sender, target string) *rooms.Event {
	r.tb.Helper()
	return r.Send(Member(sender, target, "leave"))
}

// Ban adds sender's ban of target.
func (r *Room) Ban(sender, target string) *rooms.Event {
	r.tb.Helper()
	return r.Send(Member(sender, target, "ban"))
}

// Knock adds user's knock.
func (r *Room) Knock(user string) *rooms.Event {
	r.tb.Helper()
	return r.Send(Member(user, user, "knock"))
}

// SetPowerLevels adds a power-levels event.
func (r *Room) SetPowerLevels(sender string, content map[string]any) *rooms.Event {
	r.tb.Helper()
	return r.Send(PowerLevels(sender, content))
}

// SetJoinRule adds a join-rules event without allow conditions.
func (r *Room) SetJoinRule(sender, rule string) *rooms.Event {
	r.tb.Helper()
	return r.Send(JoinRules(sender, rule, nil))
}

// SendState adds a state event.
func (r *Room) SendState(sender, typ, stateKey string, content map[string]any) *rooms.Event {
	r.tb.Helper()
	return r.Send(State(sender, typ, stateKey, content))
}

// SendMessage adds a text message.
func (r *Room) SendMessage(sender, body string) *rooms.Event {
	r.tb.Helper()
	return r.Send(Message(sender, body))
}

// PowerLevelsContent returns a copy of the current power-levels content
// with users[user] set to level (a starting point for SetPowerLevels), or
// the initial content if the room has none.
func (r *Room) PowerLevelsContent() map[string]any {
	cur := r.StateEvent("m.room.power_levels", "")
	if cur == nil {
		return rooms.InitialPowerLevelsContent(r.Version, r.Creator)
	}
	return deepCopy(cur.Content()).(map[string]any)
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			out[k] = deepCopy(val)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = deepCopy(val)
		}
		return out
	default:
		return v
	}
}

// WithUserLevel returns a copy of power-levels content with users[user]
// set to level.
func WithUserLevel(content map[string]any, user string, level int64) map[string]any {
	out := deepCopy(content).(map[string]any)
	users, _ := out["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	users[user] = level
	out["users"] = users
	return out
}

// ThirdPartyInviteContent returns the content of an
// m.room.third_party_invite event whose identity-server key is key.
func ThirdPartyInviteContent(key rooms.SigningKey) map[string]any {
	pub := rooms.EncodeBase64(key.PublicKey())
	return map[string]any{
		"display_name":     "j...@example.org",
		"key_validity_url": "https://" + key.ServerName + "/_matrix/identity/v2/pubkey/isvalid",
		"public_key":       pub,
		"public_keys": []any{map[string]any{
			"public_key":       pub,
			"key_validity_url": "https://" + key.ServerName + "/_matrix/identity/v2/pubkey/isvalid",
		}},
	}
}

// ThirdPartySigned returns the "signed" object an identity server issues
// when the invited address is bound to mxid, signed by key.
func ThirdPartySigned(tb testing.TB, mxid, token string, key rooms.SigningKey) map[string]any {
	tb.Helper()
	signed := map[string]any{"mxid": mxid, "token": token}
	if err := rooms.SignJSON(signed, key); err != nil {
		tb.Fatalf("roomstest: sign third-party invite: %v", err)
	}
	return signed
}

// ThirdPartyInvite describes the m.room.member invite that completes a
// third-party invite: sender invites target carrying signed.
func ThirdPartyInvite(sender, target string, signed map[string]any) Spec {
	s := Member(sender, target, "invite")
	s.Content["third_party_invite"] = map[string]any{"display_name": "j...@example.org", "signed": signed}
	return s
}
