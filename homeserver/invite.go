package homeserver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// Inviter sends an invite to the invitee's server (PUT /v2/invite).
// *federation.Client satisfies it; the engine uses it when its Remote does.
type Inviter interface {
	// SendInvite returns the event countersigned by server.
	SendInvite(ctx context.Context, server, roomID, eventID, roomVersion string, event []byte, inviteRoomState [][]byte) ([]byte, error)
}

// inviteStateKeys are the state events offered to an invitee (besides the
// inviter's membership): the create event, which the spec requires, and
// what a client shows of a room.
var inviteStateKeys = []rooms.StateTuple{
	rooms.CreateTuple,
	{Type: "m.room.join_rules"},
	{Type: "m.room.name"},
	{Type: "m.room.canonical_alias"},
	{Type: "m.room.avatar"},
	{Type: "m.room.encryption"},
	{Type: "m.room.topic"},
}

// Invite invites invitee to a room we are in, as the local user sender.
// A remote invitee's server countersigns the invite first (PUT
// /v2/invite, with the create event and the room's descriptive state as
// invite_room_state); the countersigned event is then sent into the room
// like any local event. It returns the invite.
func (e *Engine) Invite(ctx context.Context, roomID, sender, invitee string) (*rooms.Event, error) {
	s, err := rooms.ParseUserID(sender)
	if err != nil {
		return nil, badRequest("invite: sender: %v", err)
	}
	if string(s.Server()) != e.ServerName {
		return nil, badRequest("invite: sender %s is not a user of %s", sender, e.ServerName)
	}
	target, err := rooms.ParseUserID(invitee)
	if err != nil {
		return nil, badRequest("invite: invitee: %v", err)
	}
	unlock := e.lockRoom(roomID)
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	h, err := e.head(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("invite: %w", err)
	}
	if h == nil {
		return nil, notFound("invite: this server is not in room %s", roomID)
	}
	t, current, err := e.nextTemplate(ctx, h, roomID, rooms.EventTemplate{
		Type: "m.room.member", StateKey: rooms.StringPtr(invitee), Sender: sender,
		Content: map[string]any{"membership": "invite"},
	})
	if err != nil {
		return nil, fmt.Errorf("invite: %w", err)
	}
	ev, err := rooms.BuildEvent(h.v, t, e.Signer)
	if err != nil {
		return nil, badRequest("invite: %v", err)
	}
	if err := rooms.CheckAuth(ev, current); err != nil {
		return nil, forbidden("invite: %v", err)
	}
	server := string(target.Server())
	if server != e.ServerName {
		// The room is not held locked while the invitee's server answers.
		state, err := e.inviteRoomState(ctx, h, ev.Sender())
		if err != nil {
			return nil, fmt.Errorf("invite: %w", err)
		}
		unlock()
		locked = false
		if ev, err = e.countersignedInvite(ctx, h.v, roomID, server, ev, state); err != nil {
			return nil, remoteRefusal("invite: "+server, err)
		}
		unlock = e.lockRoom(roomID)
		locked = true
		if h, err = e.head(ctx, roomID); err != nil {
			return nil, fmt.Errorf("invite: %w", err)
		}
		if h == nil || !slices.Equal(h.extremities, t.PrevEvents) {
			// The room moved meanwhile: the invite follows older events
			// and is judged like a received one, then sent on.
			unlock()
			locked = false
			if err := e.acceptMembership(ctx, e.ServerName, roomID, ev); err != nil {
				return nil, fmt.Errorf("invite: %w", err)
			}
			return ev, nil
		}
	}
	if err := e.commitLocal(ctx, h, roomID, ev, current, nil); err != nil {
		return nil, fmt.Errorf("invite: %w", err)
	}
	return ev, nil
}

// inviteRoomState is the room state offered to an invitee: full PDUs of
// the create event, the room's descriptive state and the inviter's
// membership.
func (e *Engine) inviteRoomState(ctx context.Context, h *roomHead, inviter string) ([][]byte, error) {
	var state [][]byte
	keys := append(slices.Clone(inviteStateKeys), rooms.StateTuple{Type: "m.room.member", StateKey: inviter})
	for _, k := range keys {
		id, ok := h.current[k]
		if !ok {
			continue
		}
		se, err := e.storedEvent(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("invite room state: %w", err)
		}
		state = append(state, se.Event.JSON())
	}
	return state, nil
}

// countersignedInvite asks the invitee's server to countersign ev and
// checks the answer: the same event with a valid signature of that server.
func (e *Engine) countersignedInvite(ctx context.Context, v rooms.Version, roomID, server string, ev *rooms.Event, state [][]byte) (*rooms.Event, error) {
	inviter, ok := e.Remote.(Inviter)
	if !ok {
		return nil, errors.New("the engine has no remote that can send invites")
	}
	raw, err := inviter.SendInvite(ctx, server, roomID, ev.EventID(), v.ID, ev.JSON(), state)
	if err != nil {
		return nil, err
	}
	signed, err := rooms.ParseEvent(v, raw)
	if err != nil {
		return nil, fmt.Errorf("countersigned invite from %s: %w", server, err)
	}
	if signed.EventID() != ev.EventID() {
		return nil, fmt.Errorf("countersigned invite from %s is %s, not %s", server, signed.EventID(), ev.EventID())
	}
	if e.Keys == nil {
		return nil, errors.New("no key source to verify signatures")
	}
	lookup := e.Keys.KeyLookup(ctx)
	if err := rooms.VerifyEventSignatures(signed, lookup); err != nil {
		return nil, fmt.Errorf("countersigned invite from %s: %w", server, err)
	}
	if err := verifyServerSignature(signed, server, lookup); err != nil {
		return nil, fmt.Errorf("countersigned invite from %s: %w", server, err)
	}
	return signed, nil
}

// verifyServerSignature checks that ev carries a valid signature of
// server under a key it had at the event's time.
func verifyServerSignature(ev *rooms.Event, server string, lookup rooms.KeyLookup) error {
	red := rooms.Redact(ev.Version(), ev.Object())
	var failures []error
	for keyID := range rooms.Signatures(red, server) {
		if !rooms.IsEd25519KeyID(keyID) {
			continue
		}
		pub, err := lookup.VerifyKey(server, keyID, ev.OriginServerTS())
		if err != nil {
			failures = append(failures, err)
			continue
		}
		if err := rooms.VerifyJSONSignature(red, server, keyID, pub); err != nil {
			return err
		}
		return nil
	}
	return fmt.Errorf("no valid signature of %s: %w", server, errors.Join(failures...))
}

// ReceiveInvite answers PUT /v2/invite: an invite of one of our users by
// a user of origin into a room of roomVersion. The event (type, membership
// invite, sender of origin, state key a user of ours, ID and room as in the
// path, signatures, hashes) and the invite room state (full PDUs of the
// room, its create event among them, signed) are checked; the event is
// countersigned and, unless one of our users is in the room (then it
// arrives again through /send), kept as an outlier, the room marked
// invited, and appended to the host log as an invite. It returns the countersigned event.
func (e *Engine) ReceiveInvite(ctx context.Context, origin, roomID, eventID, roomVersion string, raw []byte, inviteRoomState [][]byte) ([]byte, error) {
	v, err := rooms.LookupVersion(roomVersion)
	if err != nil {
		return nil, &IncompatibleVersionError{RoomID: roomID, Version: roomVersion}
	}
	ev, err := rooms.ParseEvent(v, raw)
	if err != nil {
		return nil, badRequest("invite: %v", err)
	}
	sk, _ := ev.StateKey()
	switch {
	case ev.EventID() != eventID:
		return nil, badRequest("invite: the event's ID is %s, not %s", ev.EventID(), eventID)
	case ev.RoomID() != roomID:
		return nil, badRequest("invite: the event is of room %s, not %s", ev.RoomID(), roomID)
	case ev.Type() != "m.room.member" || ev.Membership() != "invite":
		return nil, badRequest("invite: the event is not an m.room.member invite")
	case ev.SenderServer() != origin:
		return nil, badRequest("invite: the sender %s is not a user of %s", ev.Sender(), origin)
	case serverOf(sk) != e.ServerName:
		return nil, badRequest("invite: the invitee %s is not a user of %s", sk, e.ServerName)
	}
	if err := e.inviteeRegistered(ctx, sk); err != nil {
		return nil, err
	}
	if e.Keys == nil {
		return nil, errors.New("invite: no key source to verify signatures")
	}
	lookup := e.Keys.KeyLookup(ctx)
	if err := rooms.VerifyEventSignatures(ev, lookup); err != nil {
		return nil, badRequest("invite: %v", err)
	}
	if !ev.ContentHashValid() {
		return nil, badRequest("invite: the event's content hash does not match")
	}
	if err := checkInviteRoomState(v, roomID, inviteRoomState, lookup); err != nil {
		return nil, badRequest("invite: invite_room_state: %v", err)
	}
	obj := maps.Clone(ev.Object())
	red := rooms.Redact(v, obj)
	if err := rooms.SignJSON(red, e.Signer); err != nil {
		return nil, fmt.Errorf("invite: countersign: %w", err)
	}
	obj["signatures"] = red["signatures"]
	signed, err := rooms.NewEventFromObject(v, obj)
	if err != nil {
		return nil, fmt.Errorf("invite: countersign: %w", err)
	}
	unlock := e.lockRoom(roomID)
	defer unlock()
	here, _, err := e.joinedHere(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("invite: %w", err)
	}
	if here {
		return signed.JSON(), nil
	}
	batch := store.Batch{
		Events:     []store.NewEvent{{Event: signed, Outcome: store.Outlier}},
		RoomStatus: store.RoomInvited,
		HostLog:    []store.HostLogEntry{{Kind: store.HostInvite, RoomID: roomID, Payload: signed.JSON()}},
	}
	if err := e.persist(ctx, batch); err != nil {
		return nil, fmt.Errorf("invite: %w", err)
	}
	e.Logger.Info().Str(fieldOrigin, origin).Str(fieldRoomID, roomID).Str("invitee", sk).Str(fieldEventID, eventID).Msg("invite received")
	return signed.JSON(), nil
}

// maxInviteRoomState bounds the events of invite_room_state and
// knock_room_state: a handful of state events, each of which may cost a
// key fetch to verify.
const maxInviteRoomState = 50

// checkInviteRoomState checks the room state offered with an invite: full
// PDUs of the room, signed, among them the room's create event.
func checkInviteRoomState(v rooms.Version, roomID string, state [][]byte, lookup rooms.KeyLookup) error {
	if len(state) > maxInviteRoomState {
		return fmt.Errorf("%d events, more than the %d this server checks", len(state), maxInviteRoomState)
	}
	var create *rooms.Event
	for _, raw := range state {
		ev, err := rooms.ParseEvent(v, raw)
		if err != nil {
			return err
		}
		if ev.Type() != "m.room.create" && ev.RoomID() != roomID {
			return fmt.Errorf("event %s is of room %s", ev.EventID(), ev.RoomID())
		}
		if err := rooms.VerifyEventSignatures(ev, lookup); err != nil {
			return err
		}
		if k, ok := rooms.StateTupleOf(ev); ok && k == rooms.CreateTuple {
			create = ev
		}
	}
	if create == nil {
		return errors.New("the room's create event is missing")
	}
	return checkCreateNamesRoom(v, create, roomID)
}

// inviteeRegistered checks that the local user an invite is for exists,
// registering it when AutoRegisterUsers is on.
func (e *Engine) inviteeRegistered(ctx context.Context, userID string) error {
	_, err := e.Store.User(ctx, userID)
	if err == nil {
		return nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("invite: %w", err)
	}
	if !e.AutoRegisterUsers {
		return forbidden("invite: %s is not a registered user of %s", userID, e.ServerName)
	}
	if err := e.Store.PutUser(ctx, store.User{ID: userID}); err != nil {
		return fmt.Errorf("invite: register %s: %w", userID, err)
	}
	e.Logger.Info().Str("user", userID).Msg("user registered by an invite from another server")
	return nil
}

// remoteRefusal classifies the failure of a request to another server
// made for a local user: the server's refusal (a 4xx answer) is
// Forbidden, anything else (unreachable, 5xx, an unusable answer)
// Unavailable; the end of ctx is returned as it is.
func remoteRefusal(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	var status interface{ HTTPStatus() int }
	if errors.As(err, &status) && status.HTTPStatus() >= 400 && status.HTTPStatus() < 500 {
		return forbidden("%s refused: %v", what, err)
	}
	return unavailable("%s: %v", what, err)
}
