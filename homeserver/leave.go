package homeserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// Leaver is what the engine asks of a resident server to leave a room it
// is not in (rejecting an invite): make_leave, send_leave v2.
// *federation.Client satisfies it; the engine uses it when its Remote
// does.
type Leaver interface {
	// MakeLeave returns the room version and a leave template.
	MakeLeave(ctx context.Context, server, roomID, userID string) (roomVersion string, template []byte, err error)
	// SendLeave sends the signed leave.
	SendLeave(ctx context.Context, server, roomID, eventID string, event []byte) error
}

// LeaveRoom makes userID, a local user, leave roomID. When this server is
// in the room the leave is an ordinary local event. Otherwise (an invite
// being rejected) each server of via is asked in turn (make_leave,
// send_leave v2); the accepted leave is kept as an outlier and the room
// marked left. It returns the leave event.
func (e *Engine) LeaveRoom(ctx context.Context, roomID, userID string, via []string) (*rooms.Event, error) {
	return e.LeaveRoomWithReason(ctx, roomID, userID, "", via)
}

// LeaveRoomWithReason is LeaveRoom with a reason, which, when not empty,
// goes into the leave's content.
func (e *Engine) LeaveRoomWithReason(ctx context.Context, roomID, userID, reason string, via []string) (*rooms.Event, error) {
	user, err := rooms.ParseUserID(userID)
	if err != nil {
		return nil, badRequest("leave: user: %v", err)
	}
	if string(user.Server()) != e.ServerName {
		return nil, badRequest("leave: %s is not a user of %s", userID, e.ServerName)
	}
	here, servers, err := e.joinedHere(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("leave %s: %w", roomID, err)
	}
	if !here && len(via) == 0 {
		// Our copy of a room we hold without joined members names the
		// residents to ask.
		via = servers
	}
	content := map[string]any{"membership": "leave"}
	if reason != "" {
		content["reason"] = reason
	}
	if here {
		return e.SendEvent(ctx, roomID, LocalEvent{Type: "m.room.member", StateKey: rooms.StringPtr(userID), Sender: userID,
			Content: content})
	}
	leaver, ok := e.Remote.(Leaver)
	if !ok {
		return nil, errors.New("leave: the engine has no remote that can leave rooms")
	}
	var failures []error
	for _, server := range via {
		if server == e.ServerName || server == "" {
			continue
		}
		ev, err := e.leaveVia(ctx, leaver, server, roomID, userID, content)
		if err == nil {
			e.Logger.Info().Str(fieldRoomID, roomID).Str("via", server).Str("user", userID).Msg("left a remote room")
			return ev, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("leave %s: %w", roomID, ctx.Err())
		}
		e.Logger.Warn().Err(err).Str(fieldRoomID, roomID).Str("via", server).Msg("leaving through this server failed; trying the next")
		failures = append(failures, fmt.Errorf("via %s: %w", server, err))
	}
	if len(failures) == 0 {
		return nil, badRequest("leave %s: no server to leave through", roomID)
	}
	return nil, fmt.Errorf("leave %s: %w: %w", roomID, ErrEveryServerFailed, errors.Join(failures...))
}

// leaveVia runs the leave handshake with one resident server.
func (e *Engine) leaveVia(ctx context.Context, leaver Leaver, server, roomID, userID string, content map[string]any) (*rooms.Event, error) {
	versionID, rawTemplate, err := leaver.MakeLeave(ctx, server, roomID, userID)
	if err != nil {
		return nil, fmt.Errorf("make_leave: %w", err)
	}
	v, err := rooms.LookupVersion(versionID)
	if err != nil {
		return nil, fmt.Errorf("make_leave: %w", err)
	}
	t, err := memberTemplate(rawTemplate, roomID, userID, "leave")
	if err != nil {
		return nil, fmt.Errorf("make_leave: %w", err)
	}
	t.Content = content
	t.OriginServerTS = e.now().UnixMilli()
	ev, err := rooms.BuildEvent(v, t, e.Signer)
	if err != nil {
		return nil, fmt.Errorf("make_leave: template: %w", err)
	}
	if err := leaver.SendLeave(ctx, server, roomID, ev.EventID(), ev.JSON()); err != nil {
		return nil, fmt.Errorf("send_leave: %w", err)
	}
	if err := e.keepRemoteMembership(ctx, server, ev, store.RoomLeft); err != nil {
		return nil, err
	}
	return ev, nil
}

// keepRemoteMembership records our user's membership event that a
// resident server accepted (send_leave, send_knock): as an event of the
// room when we hold the room, else as an outlier, the room taking status.
func (e *Engine) keepRemoteMembership(ctx context.Context, server string, ev *rooms.Event, status string) error {
	roomID := ev.RoomID()
	if _, in, err := e.roomVersion(ctx, roomID); err != nil {
		return err
	} else if in {
		// We hold the room: the event goes in like any of its events.
		if err := e.takeIn(ctx, server, ev); err != nil {
			e.Logger.Warn().Err(err).Str(fieldRoomID, roomID).Str(fieldEventID, ev.EventID()).
				Str("membership", ev.Membership()).Msg("the resident accepted the membership event but this server did not")
		}
		return nil
	}
	unlock := e.lockRoom(roomID)
	defer unlock()
	if _, in, err := e.roomVersion(ctx, roomID); err != nil {
		return err
	} else if in {
		// Joined meanwhile: the event reaches us through the room.
		return nil
	}
	if err := e.persist(ctx, store.Batch{Events: []store.NewEvent{{Event: ev, Outcome: store.Outlier}}, RoomStatus: status}); err != nil {
		return fmt.Errorf("%s %s: persist: %w", ev.Membership(), roomID, err)
	}
	return nil
}

// MakeLeave answers make_leave: a leave template for userID, a user of
// origin who may leave (is invited, joined or knocking) by the current
// state.
func (e *Engine) MakeLeave(ctx context.Context, origin, roomID, userID string) (string, []byte, error) {
	return e.makeMember(ctx, origin, roomID, userID, "leave", nil)
}

// SendLeave answers send_leave: it checks the signed leave of a user of
// origin as SendJoin checks a join and accepts it through the inbound
// pipeline, queued for the other servers in the room.
func (e *Engine) SendLeave(ctx context.Context, origin, roomID, eventID string, raw []byte) error {
	v, in, err := e.roomVersion(ctx, roomID)
	if err != nil {
		return fmt.Errorf("send_leave: %w", err)
	}
	if !in {
		return notFound("send_leave: room %s is not known here", roomID)
	}
	ev, err := rooms.ParseEvent(v, raw)
	if err != nil {
		return badRequest("send_leave: %v", err)
	}
	if err := checkMembershipEvent(ev, origin, roomID, eventID, "leave"); err != nil {
		return err
	}
	if e.Keys == nil {
		return errors.New("send_leave: no key source to verify signatures")
	}
	if err := rooms.VerifyEventSignatures(ev, e.Keys.KeyLookup(ctx)); err != nil {
		return badRequest("send_leave: %v", err)
	}
	if !ev.ContentHashValid() {
		return badRequest("send_leave: the leave's content hash does not match")
	}
	if err := e.acceptMembership(ctx, origin, roomID, ev); err != nil {
		return fmt.Errorf("send_leave: %w", err)
	}
	return nil
}
