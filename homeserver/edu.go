package homeserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// EDU types the engine passes to the host.
const (
	eduTyping  = "m.typing"
	eduReceipt = "m.receipt"
)

// ReceiveEDU handles one EDU of a transaction from origin. m.typing and
// m.receipt are checked (each user must be on origin and joined to a room
// we are in whose server ACL admits origin) and what passes is appended
// to the host event log as {"type", "content"}; other types are ignored.
// The error says why an EDU was ignored; it never fails the transaction.
func (e *Engine) ReceiveEDU(ctx context.Context, origin, eduType string, content []byte) error {
	tree, err := rooms.ParseJSONLenient(content)
	if err != nil {
		return fmt.Errorf("%s EDU: %w", eduType, err)
	}
	obj, ok := tree.(map[string]any)
	if !ok {
		return fmt.Errorf("%s EDU: content is not an object", eduType)
	}
	switch eduType {
	case eduTyping:
		return e.receiveTyping(ctx, origin, obj)
	case eduReceipt:
		return e.receiveReceipts(ctx, origin, obj)
	default:
		e.Logger.Debug().Str(fieldOrigin, origin).Str("edu_type", eduType).Msg("EDU ignored")
		return nil
	}
}

func (e *Engine) receiveTyping(ctx context.Context, origin string, c map[string]any) error {
	roomID, _ := c["room_id"].(string)
	userID, _ := c["user_id"].(string)
	typing, ok := c["typing"].(bool)
	if roomID == "" || userID == "" || !ok {
		return errors.New("m.typing EDU: room_id, user_id and typing are required")
	}
	if err := e.eduUserAllowed(ctx, origin, roomID, userID); err != nil {
		return fmt.Errorf("m.typing EDU: %w", err)
	}
	payload, err := rooms.EncodeCanonical(map[string]any{"type": eduTyping, "content": map[string]any{
		"room_id": roomID, "user_id": userID, "typing": typing,
	}})
	if err != nil {
		return err
	}
	_, err = e.Store.AppendHostLog(ctx, store.HostLogEntry{Kind: store.HostEDU, RoomID: roomID, Payload: payload})
	return err
}

func (e *Engine) receiveReceipts(ctx context.Context, origin string, c map[string]any) error {
	var entries []store.HostLogEntry
	var refused []error
	for _, roomID := range sortedKeys(c) {
		byType, _ := c[roomID].(map[string]any)
		kept := map[string]any{}
		for _, typ := range sortedKeys(byType) {
			byUser, _ := byType[typ].(map[string]any)
			users := map[string]any{}
			for _, userID := range sortedKeys(byUser) {
				receipt, ok := byUser[userID].(map[string]any)
				if !ok {
					continue
				}
				if err := e.eduUserAllowed(ctx, origin, roomID, userID); err != nil {
					refused = append(refused, err)
					continue
				}
				users[userID] = receipt
			}
			if len(users) > 0 {
				kept[typ] = users
			}
		}
		if len(kept) == 0 {
			continue
		}
		payload, err := rooms.EncodeCanonical(map[string]any{"type": eduReceipt, "content": map[string]any{roomID: kept}})
		if err != nil {
			return err
		}
		entries = append(entries, store.HostLogEntry{Kind: store.HostEDU, RoomID: roomID, Payload: payload})
	}
	if len(entries) > 0 {
		if _, err := e.Store.AppendHostLog(ctx, entries...); err != nil {
			return err
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("m.receipt EDU: %w", errors.Join(refused...))
	}
	return nil
}

// eduUserAllowed checks that userID is on origin and joined to roomID, a
// room we are in whose ACL admits origin.
func (e *Engine) eduUserAllowed(ctx context.Context, origin, roomID, userID string) error {
	u, err := rooms.ParseUserID(userID)
	if err != nil || string(u.Server()) != origin {
		return fmt.Errorf("user %s is not a user of %s", userID, origin)
	}
	_, in, err := e.roomVersion(ctx, roomID)
	if err != nil {
		return err
	}
	if !in {
		return fmt.Errorf("this server is not in room %s", roomID)
	}
	if ok, err := e.serverAllowed(ctx, roomID, origin); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("server %s is denied by the server ACL of %s", origin, roomID)
	}
	id, err := e.Store.CurrentStateEvent(ctx, roomID, store.StateKey{Type: "m.room.member", StateKey: userID})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("user %s is not joined to %s", userID, roomID)
	}
	if err != nil {
		return err
	}
	se, err := e.storedEvent(ctx, id)
	if err != nil {
		return err
	}
	if se.Event.Membership() != "join" {
		return fmt.Errorf("user %s is not joined to %s", userID, roomID)
	}
	return nil
}
