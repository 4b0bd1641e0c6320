package homeserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// roomACL returns the content of the server ACL that applies to an event
// of roomID: ev's own content when ev is the ACL, else the room's current
// ACL; nil when the room has none.
func (e *Engine) roomACL(ctx context.Context, roomID string, ev *rooms.Event) (map[string]any, error) {
	if ev != nil {
		if sk, ok := ev.StateKey(); ok && sk == "" && ev.Type() == aclTuple.Type {
			return ev.Content(), nil
		}
	}
	id, err := e.Store.CurrentStateEvent(ctx, roomID, aclTuple)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	se, err := e.storedEvent(ctx, id)
	if err != nil {
		return nil, err
	}
	return se.Event.Content(), nil
}

// allowedDestinations keeps the servers that may receive what is sent in
// a room under acl (nil: no ACL): not us, admitted by the ACL and by
// DestinationAllowed. It returns a new slice, sorted and without repeats.
func (e *Engine) allowedDestinations(servers []string, acl map[string]any) []string {
	out := make([]string, 0, len(servers))
	for _, s := range servers {
		if s == "" || s == e.ServerName {
			continue
		}
		if acl != nil && !ACLAllows(acl, s) {
			continue
		}
		if e.DestinationAllowed != nil && !e.DestinationAllowed(s) {
			continue
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// filterDestinations applies the room's server ACL and DestinationAllowed
// to the destinations of the events of b, before b is committed. The
// events are copied when any changes; the caller's batch is untouched.
func (e *Engine) filterDestinations(ctx context.Context, b *store.Batch) error {
	var events []store.NewEvent
	for i, ne := range b.Events {
		if len(ne.Destinations) == 0 {
			continue
		}
		acl, err := e.roomACL(ctx, ne.Event.RoomID(), ne.Event)
		if err != nil {
			return fmt.Errorf("destinations of %s: %w", ne.Event.EventID(), err)
		}
		kept := e.allowedDestinations(ne.Destinations, acl)
		if slices.Equal(kept, ne.Destinations) {
			continue
		}
		if events == nil {
			events = slices.Clone(b.Events)
		}
		events[i].Destinations = kept
	}
	if events != nil {
		b.Events = events
	}
	return nil
}

// queuedIn announces the destinations of the events of a committed batch.
func (e *Engine) queuedIn(b store.Batch) {
	if e.OnQueued == nil {
		return
	}
	var dests []string
	for _, ne := range b.Events {
		dests = append(dests, ne.Destinations...)
	}
	if len(dests) == 0 {
		return
	}
	slices.Sort(dests)
	e.OnQueued(slices.Compact(dests))
}

// SendTyping queues an m.typing EDU of a local user for the other servers
// with joined members in the room (spec: typing notifications).
func (e *Engine) SendTyping(ctx context.Context, roomID, userID string, typing bool) error {
	if err := e.localJoined(ctx, roomID, userID); err != nil {
		return fmt.Errorf("send typing: %w", err)
	}
	return e.sendEDU(ctx, roomID, eduTyping, map[string]any{"room_id": roomID, "user_id": userID, "typing": typing})
}

// SendReceipt queues an m.receipt EDU (m.read or another receipt type) of
// a local user for an event, for the other servers with joined members in
// the room.
func (e *Engine) SendReceipt(ctx context.Context, roomID, userID, receiptType, eventID string, ts int64) error {
	if receiptType == "" || eventID == "" {
		return badRequest("send receipt: receipt type and event ID are required")
	}
	if err := e.localJoined(ctx, roomID, userID); err != nil {
		return fmt.Errorf("send receipt: %w", err)
	}
	content := map[string]any{roomID: map[string]any{receiptType: map[string]any{userID: map[string]any{
		"event_ids": []string{eventID}, "data": map[string]any{"ts": ts},
	}}}}
	return e.sendEDU(ctx, roomID, eduReceipt, content)
}

// localJoined checks that userID is a local user joined to roomID.
func (e *Engine) localJoined(ctx context.Context, roomID, userID string) error {
	u, err := rooms.ParseUserID(userID)
	if err != nil {
		return badRequest("user: %v", err)
	}
	if string(u.Server()) != e.ServerName {
		return badRequest("%s is not a user of %s", userID, e.ServerName)
	}
	id, err := e.Store.CurrentStateEvent(ctx, roomID, store.StateKey{Type: "m.room.member", StateKey: userID})
	if errors.Is(err, store.ErrNotFound) {
		return forbidden("%s is not in room %s", userID, roomID)
	}
	if err != nil {
		return err
	}
	se, err := e.storedEvent(ctx, id)
	if err != nil {
		return err
	}
	if m, _ := se.Event.Content()["membership"].(string); m != "join" {
		return forbidden("%s is not in room %s", userID, roomID)
	}
	return nil
}

// sendEDU queues one EDU for the servers in the room and announces it.
func (e *Engine) sendEDU(ctx context.Context, roomID, eduType string, content map[string]any) error {
	servers, err := e.Store.JoinedServers(ctx, roomID)
	if err != nil {
		return fmt.Errorf("%s EDU: %w", eduType, err)
	}
	acl, err := e.roomACL(ctx, roomID, nil)
	if err != nil {
		return fmt.Errorf("%s EDU: %w", eduType, err)
	}
	// While the room's state is partial, its other servers are those the
	// resident named, not only those of the memberships held.
	servers = e.partialDestinations(ctx, roomID, &joinedCache{servers: servers}).servers
	dests := e.allowedDestinations(servers, acl)
	if len(dests) == 0 {
		return nil
	}
	raw, err := json.Marshal(map[string]any{"edu_type": eduType, "content": content})
	if err != nil {
		return fmt.Errorf("%s EDU: %w", eduType, err)
	}
	if err := e.Store.EnqueueEDU(ctx, dests, raw); err != nil {
		return fmt.Errorf("%s EDU: %w", eduType, err)
	}
	if e.OnQueued != nil {
		e.OnQueued(dests)
	}
	return nil
}
