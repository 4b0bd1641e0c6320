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
	eduTyping   = "m.typing"
	eduReceipt  = "m.receipt"
	eduPresence = "m.presence"
)

// maxPresencePush bounds the presence updates taken from one EDU.
const maxPresencePush = 100

// eduTypesAwaitingE2EE are accepted and logged; Ferry does not implement
// end-to-end encryption support yet, so nothing else is done with them.
var eduTypesAwaitingE2EE = map[string]bool{
	"m.device_list_update": true,
	"m.signing_key_update": true,
	"m.direct_to_device":   true,
}

// ReceiveEDU handles one EDU of a transaction from origin. m.typing and
// m.receipt are checked (each user must be on origin and joined to a room
// we are in whose server ACL admits origin), m.presence updates must be
// about users of origin, and what passes is appended to the host event log
// as {"type", "content"}. The E2EE EDUs are logged; other types ignored.
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
	case eduPresence:
		return e.receivePresence(ctx, origin, obj)
	default:
		if eduTypesAwaitingE2EE[eduType] {
			e.Logger.Info().Str(fieldOrigin, origin).Str("edu_type", eduType).Msg("EDU accepted; end-to-end encryption support is not implemented, so it is not acted on")
			return nil
		}
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

// receivePresence passes on the presence updates of origin's own users
// (at most maxPresencePush per EDU) with the fields the spec defines.
func (e *Engine) receivePresence(ctx context.Context, origin string, c map[string]any) error {
	push, ok := c["push"].([]any)
	if !ok {
		return errors.New("m.presence EDU: push must be an array")
	}
	var kept []any
	var refused []error
	for i, raw := range push {
		if i == maxPresencePush {
			refused = append(refused, fmt.Errorf("only the first %d of %d updates are taken", maxPresencePush, len(push)))
			break
		}
		p, _ := raw.(map[string]any)
		userID, _ := p["user_id"].(string)
		presence, _ := p["presence"].(string)
		if u, err := rooms.ParseUserID(userID); err != nil || string(u.Server()) != origin {
			refused = append(refused, fmt.Errorf("user %q is not a user of %s", userID, origin))
			continue
		}
		switch presence {
		case "online", "offline", "unavailable":
		default:
			refused = append(refused, fmt.Errorf("user %s: presence %q is not online, offline or unavailable", userID, presence))
			continue
		}
		update := map[string]any{"user_id": userID, "presence": presence}
		if v, ok := p["last_active_ago"].(int64); ok && v >= 0 {
			update["last_active_ago"] = v
		}
		if v, ok := p["currently_active"].(bool); ok {
			update["currently_active"] = v
		}
		if v, ok := p["status_msg"].(string); ok {
			update["status_msg"] = v
		}
		kept = append(kept, update)
	}
	if len(kept) > 0 {
		payload, err := rooms.EncodeCanonical(map[string]any{"type": eduPresence, "content": map[string]any{"push": kept}})
		if err != nil {
			return err
		}
		if _, err := e.Store.AppendHostLog(ctx, store.HostLogEntry{Kind: store.HostEDU, Payload: payload}); err != nil {
			return err
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("m.presence EDU: %w", errors.Join(refused...))
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
