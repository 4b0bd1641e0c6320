package homeserver

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// JoinRefusal is a refusal of make_join with its own Matrix error code
// (400): M_UNABLE_TO_AUTHORISE_JOIN when we cannot evaluate a restricted
// room's conditions, M_UNABLE_TO_GRANT_JOIN when none of our users may
// authorise the join. The requester should try another server.
type JoinRefusal struct {
	Code    string
	Message string
}

func (e *JoinRefusal) Error() string { return e.Message }

// MatrixErrCode returns the Matrix error code.
func (e *JoinRefusal) MatrixErrCode() string { return e.Code }

// BadRequest reports that the refusal is a 400.
func (e *JoinRefusal) BadRequest() bool { return true }

// Join rules whose joins may be authorised by a resident.
const (
	joinRuleRestricted      = "restricted"
	joinRuleKnockRestricted = "knock_restricted"
)

var joinRulesTuple = rooms.StateTuple{Type: "m.room.join_rules"}

// restrictedAuthoriser decides who of our users authorises userID's join
// of a restricted room (join_authorised_via_users_server): "" when the
// room is not restricted or the user is invited or joined already. The
// user must be joined to one of the rooms the join rules allow that we are
// in; the authoriser is one of our joined users who may invite. Call it
// with the room locked.
func (e *Engine) restrictedAuthoriser(ctx context.Context, h *roomHead, roomID, userID string) (string, error) {
	jrID, ok := h.current[joinRulesTuple]
	if !ok {
		return "", nil
	}
	jr, err := e.storedEvent(ctx, jrID)
	if err != nil {
		return "", fmt.Errorf("join rules: %w", err)
	}
	rule, _ := jr.Event.Content()["join_rule"].(string)
	if rule != joinRuleRestricted && rule != joinRuleKnockRestricted {
		return "", nil
	}
	if id, ok := h.current[rooms.StateTuple{Type: "m.room.member", StateKey: userID}]; ok {
		se, err := e.storedEvent(ctx, id)
		if err != nil {
			return "", fmt.Errorf("membership: %w", err)
		}
		if m := se.Event.Membership(); m == "join" || m == "invite" {
			return "", nil
		}
	}
	allow, _ := jr.Event.Content()["allow"].([]any)
	known, allowed := false, false
	for _, a := range allow {
		cond, _ := a.(map[string]any)
		other, _ := cond["room_id"].(string)
		if cond["type"] != "m.room_membership" || other == "" {
			continue
		}
		_, in, err := e.roomVersion(ctx, other)
		if err != nil {
			return "", err
		}
		if !in {
			continue
		}
		known = true
		id, err := e.Store.CurrentStateEvent(ctx, other, store.StateKey{Type: "m.room.member", StateKey: userID})
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return "", err
		}
		se, err := e.storedEvent(ctx, id)
		if err != nil {
			return "", err
		}
		if se.Event.Membership() == "join" {
			allowed = true
			break
		}
	}
	if !known {
		return "", &JoinRefusal{Code: "M_UNABLE_TO_AUTHORISE_JOIN", Message: fmt.Sprintf("this server is in none of the rooms whose members may join %s", roomID)}
	}
	if !allowed {
		return "", forbidden("%s is not a member of any room whose members may join %s", userID, roomID)
	}
	state, err := e.loadState(ctx, h.current, []rooms.StateTuple{rooms.CreateTuple, {Type: "m.room.power_levels"}})
	if err != nil {
		return "", err
	}
	pl, err := rooms.PowerLevelsFrom(state)
	if err != nil {
		return "", fmt.Errorf("power levels: %w", err)
	}
	members, err := e.Store.Members(ctx, roomID, "join")
	if err != nil {
		return "", err
	}
	for _, m := range members {
		if serverOf(m) != e.ServerName {
			continue
		}
		level, ok := pl.Users[m]
		if !ok {
			level = pl.UsersDefault
		}
		if pl.Creators[m] || level >= pl.Invite {
			return m, nil
		}
	}
	return "", &JoinRefusal{Code: "M_UNABLE_TO_GRANT_JOIN", Message: fmt.Sprintf("none of the users of %s in %s may authorise joins", e.ServerName, roomID)}
}

// cosignRestrictedJoin adds our signature to a join whose
// join_authorised_via_users_server names one of our users; other events
// are returned as they are.
func (e *Engine) cosignRestrictedJoin(ev *rooms.Event) (*rooms.Event, error) {
	via, _ := ev.Content()["join_authorised_via_users_server"].(string)
	if via == "" || serverOf(via) != e.ServerName {
		return ev, nil
	}
	obj := maps.Clone(ev.Object())
	red := rooms.Redact(ev.Version(), obj)
	if err := rooms.SignJSON(red, e.Signer); err != nil {
		return nil, fmt.Errorf("countersign: %w", err)
	}
	obj["signatures"] = red["signatures"]
	signed, err := rooms.NewEventFromObject(ev.Version(), obj)
	if err != nil {
		return nil, fmt.Errorf("countersign: %w", err)
	}
	return signed, nil
}
