package homeserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// RoomKnocked is the status of a room one of our users knocked on (the
// store's statuses are free text; this one is the engine's).
const RoomKnocked = "knocked"

// Knocker is what the engine asks of a resident server to knock on a room
// (make_knock, send_knock). *federation.Client satisfies it; the engine
// uses it when its Remote does.
type Knocker interface {
	// MakeKnock asks server for a knock template, offering versions.
	MakeKnock(ctx context.Context, server, roomID, userID string, versions []string) (roomVersion string, template []byte, err error)
	// SendKnock sends the signed knock and returns knock_room_state.
	SendKnock(ctx context.Context, server, roomID, eventID string, event []byte) (knockRoomState [][]byte, err error)
}

// KnockRoom knocks on roomID for userID, a local user, through each
// server of via in turn (make_knock with every version we support,
// send_knock). reason, when not empty, goes into the knock's content. The
// room state the resident returns must hold the room's create event and
// verify. The knock is kept as an outlier and the room marked knocked. It
// returns the knock.
func (e *Engine) KnockRoom(ctx context.Context, roomID, userID, reason string, via []string) (*rooms.Event, error) {
	user, err := rooms.ParseUserID(userID)
	if err != nil {
		return nil, badRequest("knock: user: %v", err)
	}
	if string(user.Server()) != e.ServerName {
		return nil, badRequest("knock: %s is not a user of %s", userID, e.ServerName)
	}
	here, servers, err := e.joinedHere(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("knock %s: %w", roomID, err)
	}
	if !here && len(via) == 0 {
		// Our copy of a room we hold without joined members names the
		// residents to ask.
		via = servers
	}
	if here {
		content := map[string]any{"membership": "knock"}
		if reason != "" {
			content["reason"] = reason
		}
		return e.SendEvent(ctx, roomID, LocalEvent{Type: "m.room.member", StateKey: rooms.StringPtr(userID), Sender: userID, Content: content})
	}
	knocker, ok := e.Remote.(Knocker)
	if !ok {
		return nil, errors.New("knock: the engine has no remote that can knock")
	}
	var failures []error
	for _, server := range via {
		if server == e.ServerName || server == "" {
			continue
		}
		ev, err := e.knockVia(ctx, knocker, server, roomID, userID, reason)
		if err == nil {
			e.Logger.Info().Str(fieldRoomID, roomID).Str("via", server).Str("user", userID).Msg("knocked on a remote room")
			return ev, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("knock %s: %w", roomID, ctx.Err())
		}
		e.Logger.Warn().Err(err).Str(fieldRoomID, roomID).Str("via", server).Msg("knocking through this server failed; trying the next")
		failures = append(failures, fmt.Errorf("via %s: %w", server, err))
	}
	if len(failures) == 0 {
		return nil, badRequest("knock %s: no server to knock through", roomID)
	}
	return nil, fmt.Errorf("knock %s: %w: %w", roomID, ErrEveryServerFailed, errors.Join(failures...))
}

// knockVia runs the knock handshake with one resident server.
func (e *Engine) knockVia(ctx context.Context, knocker Knocker, server, roomID, userID, reason string) (*rooms.Event, error) {
	versionID, rawTemplate, err := knocker.MakeKnock(ctx, server, roomID, userID, rooms.SupportedVersionIDs())
	if err != nil {
		return nil, fmt.Errorf("make_knock: %w", err)
	}
	v, err := rooms.LookupVersion(versionID)
	if err != nil {
		return nil, fmt.Errorf("make_knock: the room's version is not supported here: %w", err)
	}
	t, err := memberTemplate(rawTemplate, roomID, userID, "knock")
	if err != nil {
		return nil, fmt.Errorf("make_knock: %w", err)
	}
	t.Content = map[string]any{"membership": "knock"}
	if reason != "" {
		t.Content["reason"] = reason
	}
	t.OriginServerTS = e.now().UnixMilli()
	ev, err := rooms.BuildEvent(v, t, e.Signer)
	if err != nil {
		return nil, fmt.Errorf("make_knock: template: %w", err)
	}
	state, err := knocker.SendKnock(ctx, server, roomID, ev.EventID(), ev.JSON())
	if err != nil {
		return nil, fmt.Errorf("send_knock: %w", err)
	}
	if e.Keys == nil {
		return nil, errors.New("no key source to verify signatures")
	}
	if err := checkInviteRoomState(v, roomID, state, e.Keys.KeyLookup(ctx)); err != nil {
		return nil, fmt.Errorf("send_knock: knock_room_state: %w", err)
	}
	if err := e.keepRemoteMembership(ctx, server, ev, RoomKnocked); err != nil {
		return nil, err
	}
	return ev, nil
}

// MakeKnock answers make_knock: like MakeJoin, for a knock.
func (e *Engine) MakeKnock(ctx context.Context, origin, roomID, userID string, versions []string) (string, []byte, error) {
	return e.makeMember(ctx, origin, roomID, userID, "knock", versions)
}

// SendKnock answers send_knock: it checks the signed knock of a user of
// origin as SendJoin checks a join, accepts it through the inbound
// pipeline (queued for the other servers in the room) and returns the
// room state shown to knockers: full PDUs of the create event, the join
// rules, the name and the like.
func (e *Engine) SendKnock(ctx context.Context, origin, roomID, eventID string, raw []byte) ([][]byte, error) {
	v, in, err := e.roomVersion(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("send_knock: %w", err)
	}
	if !in {
		return nil, notFound("send_knock: room %s is not known here", roomID)
	}
	ev, err := rooms.ParseEvent(v, raw)
	if err != nil {
		return nil, badRequest("send_knock: %v", err)
	}
	if err := checkMembershipEvent(ev, origin, roomID, eventID, "knock"); err != nil {
		return nil, err
	}
	if e.Keys == nil {
		return nil, errors.New("send_knock: no key source to verify signatures")
	}
	if err := rooms.VerifyEventSignatures(ev, e.Keys.KeyLookup(ctx)); err != nil {
		return nil, badRequest("send_knock: %v", err)
	}
	if !ev.ContentHashValid() {
		return nil, badRequest("send_knock: the knock's content hash does not match")
	}
	if err := e.acceptMembership(ctx, origin, roomID, ev); err != nil {
		return nil, fmt.Errorf("send_knock: %w", err)
	}
	current, err := e.Store.CurrentState(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("send_knock: %w", err)
	}
	var out [][]byte
	for _, k := range inviteStateKeys {
		id, ok := current[store.StateKey(k)]
		if !ok {
			continue
		}
		se, err := e.storedEvent(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("send_knock: %w", err)
		}
		out = append(out, se.Event.JSON())
	}
	return out, nil
}
