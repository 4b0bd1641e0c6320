package homeserver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// Room presets of CreateRoom.
const (
	PresetPublicChat  = "public_chat"
	PresetPrivateChat = "private_chat"
)

// CreateRoomRequest describes a new room.
type CreateRoomRequest struct {
	// Creator is a local user ID. Required.
	Creator string
	// Version is the room version's wire ID ("10", "12"). Required.
	Version string
	// Preset is PresetPublicChat (join rule public) or PresetPrivateChat
	// (join rule invite, the default).
	Preset string
	// HistoryVisibility is m.room.history_visibility's value; "shared"
	// when empty.
	HistoryVisibility string
	// Name and Topic, when set, become m.room.name and m.room.topic.
	Name, Topic string
	// Alias, when set, is a new alias of ours ("#name:our.server") that
	// points to the room; it is also the room's m.room.canonical_alias.
	Alias string
	// AdditionalCreators are further creators, for room versions whose
	// creators hold infinite power (12); other versions refuse them.
	AdditionalCreators []string
	// Invite lists users invited once the room exists.
	Invite []string
}

// InviteError reports the initial invites of CreateRoom that failed; the
// room exists all the same.
type InviteError struct {
	RoomID   string
	Failures map[string]error // by invitee
}

func (e *InviteError) Error() string {
	users := make([]string, 0, len(e.Failures))
	for u := range e.Failures {
		users = append(users, u)
	}
	slices.Sort(users)
	parts := make([]string, len(users))
	for i, u := range users {
		parts[i] = fmt.Sprintf("%s: %v", u, e.Failures[u])
	}
	return fmt.Sprintf("room %s was created, but inviting failed for %s", e.RoomID, strings.Join(parts, "; "))
}

// CreateRoom creates a room: its create event, the creator's join, the
// power levels, join rules, history visibility and the optional name,
// topic and canonical alias, persisted in one transaction; then the alias
// is stored and the initial invites are sent. It returns the room ID; when
// an invite fails the room exists and the error is an *InviteError.
func (e *Engine) CreateRoom(ctx context.Context, req CreateRoomRequest) (string, error) {
	v, err := rooms.LookupVersion(req.Version)
	if err != nil {
		return "", badRequest("create room: %v", err)
	}
	creator, err := rooms.ParseUserID(req.Creator)
	if err != nil {
		return "", badRequest("create room: creator: %v", err)
	}
	if string(creator.Server()) != e.ServerName {
		return "", badRequest("create room: creator %s is not a user of %s", req.Creator, e.ServerName)
	}
	joinRule := "invite"
	switch req.Preset {
	case PresetPublicChat:
		joinRule = "public"
	case PresetPrivateChat, "":
	default:
		return "", badRequest("create room: unknown preset %q", req.Preset)
	}
	visibility := req.HistoryVisibility
	if visibility == "" {
		visibility = "shared"
	}
	switch visibility {
	case "world_readable", "shared", "invited", "joined":
	default:
		return "", badRequest("create room: unknown history visibility %q", visibility)
	}
	if req.Alias != "" {
		alias, err := rooms.ParseRoomAlias(req.Alias)
		if err != nil {
			return "", badRequest("create room: alias: %v", err)
		}
		if string(alias.Server()) != e.ServerName {
			return "", badRequest("create room: alias %s is not an alias of %s", req.Alias, e.ServerName)
		}
		if _, err := e.Store.Alias(ctx, req.Alias); err == nil {
			return "", badRequest("create room: alias %s is taken", req.Alias)
		} else if !errors.Is(err, store.ErrNotFound) {
			return "", fmt.Errorf("create room: alias: %w", err)
		}
	}
	for _, u := range req.Invite {
		if _, err := rooms.ParseUserID(u); err != nil {
			return "", badRequest("create room: invite: %v", err)
		}
	}

	createContent := map[string]any{"room_version": v.ID}
	if v.CreateHasCreator {
		createContent["creator"] = req.Creator
	}
	if len(req.AdditionalCreators) > 0 {
		if v.Creators != rooms.CreatorSenderPrivileged {
			return "", badRequest("create room: room version %s has no additional creators", v.ID)
		}
		extra := make([]any, 0, len(req.AdditionalCreators))
		for _, u := range req.AdditionalCreators {
			if _, err := rooms.ParseUserID(u); err != nil {
				return "", badRequest("create room: additional creator: %v", err)
			}
			extra = append(extra, u)
		}
		createContent["additional_creators"] = extra
	}
	roomID := ""
	switch v.RoomIDs {
	case rooms.RoomIDFromCreate:
	case rooms.RoomIDOpaque:
		local := make([]byte, 18)
		if _, err := rand.Read(local); err != nil {
			return "", fmt.Errorf("create room: %w", err)
		}
		roomID = "!" + rooms.EncodeBase64URL(local) + ":" + e.ServerName
	default:
		return "", fmt.Errorf("create room: room version %s has an unknown room ID scheme", v.ID)
	}
	templates := []rooms.EventTemplate{
		{Type: "m.room.create", StateKey: rooms.StringPtr(""), Content: createContent},
		{Type: "m.room.member", StateKey: rooms.StringPtr(req.Creator), Content: map[string]any{"membership": "join"}},
		{Type: "m.room.power_levels", StateKey: rooms.StringPtr(""), Content: rooms.InitialPowerLevelsContent(v, req.Creator)},
		{Type: "m.room.join_rules", StateKey: rooms.StringPtr(""), Content: map[string]any{"join_rule": joinRule}},
		{Type: "m.room.history_visibility", StateKey: rooms.StringPtr(""), Content: map[string]any{"history_visibility": visibility}},
	}
	if req.Name != "" {
		templates = append(templates, rooms.EventTemplate{Type: "m.room.name", StateKey: rooms.StringPtr(""), Content: map[string]any{"name": req.Name}})
	}
	if req.Topic != "" {
		templates = append(templates, rooms.EventTemplate{Type: "m.room.topic", StateKey: rooms.StringPtr(""), Content: map[string]any{"topic": req.Topic}})
	}
	if req.Alias != "" {
		templates = append(templates, rooms.EventTemplate{Type: "m.room.canonical_alias", StateKey: rooms.StringPtr(""), Content: map[string]any{"alias": req.Alias}})
	}
	state := map[rooms.StateTuple]*rooms.Event{}
	var batch store.Batch
	var prev *rooms.Event
	ts := e.now().UnixMilli()
	for _, t := range templates {
		t.Sender = req.Creator
		t.RoomID = roomID
		t.OriginServerTS = ts
		t.Depth = 1
		if prev != nil {
			t.PrevEvents = []string{prev.EventID()}
			t.Depth = prev.Depth() + 1
		}
		t.AuthEvents = authEventIDs(v, t, state)
		ev, err := rooms.BuildEvent(v, t, e.Signer)
		if err != nil {
			return "", fmt.Errorf("create room: %w", err)
		}
		if err := rooms.CheckAuth(ev, state); err != nil {
			return "", fmt.Errorf("create room: %s event: %w", t.Type, err)
		}
		ref := &store.StateRef{Changes: store.StateMap{}}
		if prev != nil {
			ref = &store.StateRef{AfterEvent: prev.EventID()}
		}
		batch.Events = append(batch.Events, store.NewEvent{Event: ev, Outcome: store.Accepted, StateBefore: ref})
		batch.HostLog = append(batch.HostLog, store.HostLogEntry{Kind: store.HostEvent, RoomID: ev.RoomID(), EventID: ev.EventID()})
		k, _ := rooms.StateTupleOf(ev)
		state[k] = ev
		roomID = ev.RoomID()
		prev = ev
	}
	batch.RoomStatus = store.RoomCreated
	batch.CurrentState = &store.StateRef{AfterEvent: prev.EventID()}
	unlock := e.lockRoom(roomID)
	_, err = e.Store.PersistEvents(ctx, batch)
	e.writes.ended(roomID)
	if err != nil {
		unlock()
		return "", fmt.Errorf("create room: %w", err)
	}
	e.dropHead(roomID)
	// Invites lock the room themselves.
	unlock()
	e.Logger.Info().Str(fieldRoomID, roomID).Str("room_version", v.ID).Str("creator", req.Creator).Msg("room created")
	if req.Alias != "" {
		if err := e.Store.PutAlias(ctx, store.Alias{Alias: req.Alias, RoomID: roomID, Servers: []string{e.ServerName}, Creator: req.Creator}); err != nil {
			return roomID, fmt.Errorf("create room %s: alias %s: %w", roomID, req.Alias, err)
		}
	}
	failures := map[string]error{}
	for _, invitee := range req.Invite {
		if _, err := e.Invite(ctx, roomID, req.Creator, invitee); err != nil {
			e.Logger.Warn().Err(err).Str(fieldRoomID, roomID).Str("invitee", invitee).Msg("initial invite failed")
			failures[invitee] = err
		}
	}
	if len(failures) > 0 {
		return roomID, &InviteError{RoomID: roomID, Failures: failures}
	}
	return roomID, nil
}

// authEventIDs picks the auth events of a template from state.
func authEventIDs(v rooms.Version, t rooms.EventTemplate, state map[rooms.StateTuple]*rooms.Event) []string {
	var out []string
	for _, k := range rooms.AuthSelectionFor(v, t) {
		if ev := state[k]; ev != nil {
			out = append(out, ev.EventID())
		}
	}
	return out
}

// LocalEvent is an event a local user sends.
type LocalEvent struct {
	Type     string
	StateKey *string // nil for a non-state event
	Sender   string  // a local user
	Content  map[string]any
	// Redacts is the target of an m.room.redaction.
	Redacts string
}

// SendEvent builds, signs and persists an event of a local user in a room
// we are in: its prev events are the forward extremities, its auth events
// come from the current state, which it must pass. The event is queued for
// every other server with joined members and logged for the host. It
// returns the event.
func (e *Engine) SendEvent(ctx context.Context, roomID string, le LocalEvent) (*rooms.Event, error) {
	return e.sendEvent(ctx, roomID, le, nil)
}

// sendEvent is SendEvent; a non-nil lt records (sender, txn ID) -> event
// ID in the transaction that persists the event.
func (e *Engine) sendEvent(ctx context.Context, roomID string, le LocalEvent, lt *store.LocalTxn) (*rooms.Event, error) {
	sender, err := rooms.ParseUserID(le.Sender)
	if err != nil {
		return nil, badRequest("send event: sender: %v", err)
	}
	if string(sender.Server()) != e.ServerName {
		return nil, badRequest("send event: sender %s is not a user of %s", le.Sender, e.ServerName)
	}
	unlock := e.lockRoom(roomID)
	defer unlock()
	h, err := e.head(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("send event: %w", err)
	}
	if h == nil {
		return nil, notFound("send event: this server is not in room %s", roomID)
	}
	v := h.v
	extremities := h.extremities
	if len(extremities) == 0 {
		return nil, fmt.Errorf("send event: room %s has no forward extremities", roomID)
	}
	if len(extremities) > rooms.MaxPrevEvents {
		extremities = extremities[:rooms.MaxPrevEvents]
	}
	var depth int64
	for _, id := range extremities {
		se, err := e.storedEvent(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("send event: prev event: %w", err)
		}
		depth = max(depth, se.Event.Depth())
	}
	t := rooms.EventTemplate{
		Type: le.Type, StateKey: le.StateKey, Sender: le.Sender, RoomID: roomID, Content: le.Content,
		PrevEvents: extremities, Depth: depth + 1, OriginServerTS: e.now().UnixMilli(), Redacts: le.Redacts,
	}
	want := append(rooms.AuthSelectionFor(v, t), rooms.CreateTuple)
	current, err := e.loadState(ctx, h.current, want)
	if err != nil {
		return nil, fmt.Errorf("send event: %w", err)
	}
	t.AuthEvents = authEventIDs(v, t, current)
	ev, err := rooms.BuildEvent(v, t, e.Signer)
	if err != nil {
		return nil, badRequest("send event: %v", err)
	}
	if err := rooms.CheckAuth(ev, current); err != nil {
		return nil, forbidden("send event: %v", err)
	}
	if err := e.commitLocal(ctx, h, roomID, ev, current, lt); err != nil {
		return nil, fmt.Errorf("send event: %w", err)
	}
	return ev, nil
}

// commitLocal persists a local event built on the room's head h (locked)
// and authorised by current, queues it for the other servers in the room,
// logs it for the host and moves the head. A non-nil lt is recorded in
// the same transaction.
func (e *Engine) commitLocal(ctx context.Context, h *roomHead, roomID string, ev *rooms.Event, current map[rooms.StateTuple]*rooms.Event, lt *store.LocalTxn) error {
	extremities := ev.PrevEvents()
	// The state before a local event is the current state: the state
	// after the only extremity, or the resolution of several.
	before := &store.StateRef{AfterEvent: extremities[0]}
	if len(h.extremities) > 1 {
		before = &store.StateRef{Changes: toStore(h.current)}
	}
	joined, err := e.joinedServers(ctx, h, roomID)
	if err != nil {
		return err
	}
	joined = e.partialDestinations(ctx, roomID, joined) // partial_join.go
	dests := e.localDestinations(joined)
	persist := e.persistFiltered
	if k, ok := rooms.StateTupleOf(ev); ok && k == rooms.StateTuple(aclTuple) {
		// An ACL event governs its own delivery: the ordinary filtering
		// reads it from the event.
		dests = slices.DeleteFunc(slices.Clone(joined.servers), func(s string) bool { return s == e.ServerName })
		persist = e.persistFor
	}
	batch := store.Batch{
		Events:       []store.NewEvent{{Event: ev, Outcome: store.Accepted, StateBefore: before, Destinations: dests}},
		CurrentState: &store.StateRef{AfterEvent: ev.EventID()},
		HostLog:      []store.HostLogEntry{{Kind: store.HostEvent, RoomID: roomID, EventID: ev.EventID()}},
	}
	if err := persist(ctx, batch, lt); err != nil {
		return err
	}
	e.acceptedLocal(ctx, h, roomID, ev, withEvent(h.current, ev))
	return e.applyRedaction(ctx, ev, current)
}

// applyRedaction redacts the target of an accepted redaction when the
// redaction may be applied to it (judged by state, which holds the
// create and power-levels events). A target not held yet is left alone.
func (e *Engine) applyRedaction(ctx context.Context, ev *rooms.Event, state map[rooms.StateTuple]*rooms.Event) error {
	target := ev.Redacts()
	if target == "" {
		return nil
	}
	se, err := e.storedEvent(ctx, target)
	if errors.Is(err, store.ErrNotFound) {
		// Applied when the target arrives ("keep waiting").
		e.awaitTarget(target, stagedRedaction{ev: ev, state: state})
		return nil
	}
	if err != nil {
		return err
	}
	if se.Redacted || !rooms.RedactionAllowed(ev, se.Event, state) {
		return nil
	}
	if err := e.Store.Redact(ctx, target); err != nil {
		return err
	}
	e.forget(target)
	e.Logger.Debug().Str(fieldEventID, target).Str("redaction", ev.EventID()).Msg("event redacted")
	return nil
}
