package homeserver

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-matrix/ferry/rooms"
)

// IncompatibleVersionError refuses a join or invite into a room whose
// version the other server does not support.
type IncompatibleVersionError struct {
	RoomID  string
	Version string
}

func (e *IncompatibleVersionError) Error() string {
	return fmt.Sprintf("room %s has version %s, which the requesting server does not support", e.RoomID, e.Version)
}

// IncompatibleRoomVersion returns the room's version, for the
// federation's M_INCOMPATIBLE_ROOM_VERSION answer.
func (e *IncompatibleVersionError) IncompatibleRoomVersion() string { return e.Version }

// MakeJoin answers make_join: a join template for userID, a user of
// origin, in a room we are in whose version is one of versions, if the
// user may join by the current state. It returns the room version and the
// template's JSON (unsigned, without hashes).
func (e *Engine) MakeJoin(ctx context.Context, origin, roomID, userID string, versions []string) (string, []byte, error) {
	return e.makeMember(ctx, origin, roomID, userID, "join", versions)
}

// makeMember builds the template of make_join, make_leave and make_knock:
// a membership event for userID, a user of origin, following the room's
// forward extremities, that the current state allows. versions, when not
// nil, must hold the room's version.
func (e *Engine) makeMember(ctx context.Context, origin, roomID, userID, membership string, versions []string) (string, []byte, error) {
	what := "make_" + membership
	user, err := rooms.ParseUserID(userID)
	if err != nil {
		return "", nil, badRequest("%s: user: %v", what, err)
	}
	if string(user.Server()) != origin {
		return "", nil, forbidden("%s: %s is not a user of %s", what, userID, origin)
	}
	unlock := e.lockRoom(roomID)
	defer unlock()
	h, err := e.head(ctx, roomID)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", what, err)
	}
	if h == nil {
		return "", nil, notFound("%s: room %s is not known here", what, roomID)
	}
	if err := e.requireJoinedHere(ctx, roomID); err != nil {
		return "", nil, fmt.Errorf("%s: %w", what, err)
	}
	if versions != nil && !slices.Contains(versions, h.v.ID) {
		return "", nil, &IncompatibleVersionError{RoomID: roomID, Version: h.v.ID}
	}
	if ok, err := e.aclAllows(ctx, h.current, origin); err != nil {
		return "", nil, fmt.Errorf("%s: %w", what, err)
	} else if !ok {
		return "", nil, forbidden("%s: server %s is denied by the room's server ACL", what, origin)
	}
	content := map[string]any{"membership": membership}
	if membership == "join" {
		via, err := e.restrictedAuthoriser(ctx, h, roomID, userID)
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", what, err)
		}
		if via != "" {
			content["join_authorised_via_users_server"] = via
		}
	}
	t, current, err := e.nextTemplate(ctx, h, roomID, rooms.EventTemplate{
		Type: "m.room.member", StateKey: rooms.StringPtr(userID), Sender: userID, Content: content,
	})
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", what, err)
	}
	// Judge the event as the requester would send it; our signature on
	// this trial copy plays no part in the rules.
	trial, err := rooms.BuildEvent(h.v, t, e.Signer)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := rooms.CheckAuth(trial, current); err != nil {
		return "", nil, forbidden("%s: %s may not %s %s: %v", what, userID, membership, roomID, err)
	}
	obj := map[string]any{
		"type": t.Type, "state_key": *t.StateKey, "sender": t.Sender, "room_id": roomID, "content": t.Content,
		"prev_events": t.PrevEvents, "auth_events": t.AuthEvents, "depth": t.Depth, "origin_server_ts": t.OriginServerTS,
		"origin": e.ServerName,
	}
	raw, err := rooms.EncodeCanonical(obj)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", what, err)
	}
	return h.v.ID, raw, nil
}

// nextTemplate fills in what an event following the room's forward
// extremities needs: room, prev events, depth, timestamp and auth events
// from the current state; it also returns the current state's events the
// rules read for it. Call it with the room locked.
func (e *Engine) nextTemplate(ctx context.Context, h *roomHead, roomID string, t rooms.EventTemplate) (rooms.EventTemplate, map[rooms.StateTuple]*rooms.Event, error) {
	extremities := h.extremities
	if len(extremities) == 0 {
		return t, nil, fmt.Errorf("room %s has no forward extremities", roomID)
	}
	if len(extremities) > rooms.MaxPrevEvents {
		extremities = extremities[:rooms.MaxPrevEvents]
	}
	var depths []int64
	for _, id := range extremities {
		se, err := e.storedEvent(ctx, id)
		if err != nil {
			return t, nil, fmt.Errorf("prev event: %w", err)
		}
		depths = append(depths, se.Event.Depth())
	}
	t.RoomID = roomID
	t.PrevEvents = slices.Clone(extremities)
	t.Depth = rooms.NextDepth(depths...)
	t.OriginServerTS = e.now().UnixMilli()
	want := append(rooms.AuthSelectionFor(h.v, t), rooms.CreateTuple)
	current, err := e.loadState(ctx, h.current, want)
	if err != nil {
		return t, nil, err
	}
	t.AuthEvents = authEventIDs(h.v, t, current)
	return t, current, nil
}

// SendJoin answers send_join: it checks the signed join of a user of
// origin (an m.room.member join whose sender is its state key and a user
// of origin, under the path's event ID, signed), accepts it through the
// inbound pipeline and returns the room state before the join, the auth
// chain of that state and of the join, the join as stored and the servers
// with joined members before it.
func (e *Engine) SendJoin(ctx context.Context, origin, roomID, eventID string, raw []byte) (state, authChain [][]byte, join []byte, servers []string, err error) {
	v, in, err := e.roomVersion(ctx, roomID)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("send_join: %w", err)
	}
	if !in {
		return nil, nil, nil, nil, notFound("send_join: room %s is not known here", roomID)
	}
	ev, err := rooms.ParseEvent(v, raw)
	if err != nil {
		return nil, nil, nil, nil, badRequest("send_join: %v", err)
	}
	if err := checkMembershipEvent(ev, origin, roomID, eventID, "join"); err != nil {
		return nil, nil, nil, nil, err
	}
	// A restricted join one of our users authorises carries our
	// signature too; it is added before the signatures are checked.
	if ev, err = e.cosignRestrictedJoin(ev); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("send_join: %w", err)
	}
	if e.Keys == nil {
		return nil, nil, nil, nil, errors.New("send_join: no key source to verify signatures")
	}
	if err := rooms.VerifyEventSignatures(ev, e.Keys.KeyLookup(ctx)); err != nil {
		return nil, nil, nil, nil, badRequest("send_join: %v", err)
	}
	if !ev.ContentHashValid() {
		return nil, nil, nil, nil, badRequest("send_join: the join's content hash does not match")
	}
	// servers_in_room names the servers in the room before the join.
	if servers, err = e.Store.JoinedServers(ctx, roomID); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("send_join: %w", err)
	}
	if err := e.acceptMembership(ctx, origin, roomID, ev); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("send_join: %w", err)
	}
	before, err := e.Store.StateBefore(ctx, ev.EventID())
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("send_join: state before the join: %w", err)
	}
	stateIDs := make([]string, 0, len(before))
	for _, id := range before {
		stateIDs = append(stateIDs, id)
	}
	slices.Sort(stateIDs)
	chainIDs, err := e.Store.AuthChain(ctx, append(slices.Clone(stateIDs), ev.AuthEvents()...))
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("send_join: auth chain: %w", err)
	}
	if state, err = e.eventsJSON(ctx, stateIDs); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("send_join: %w", err)
	}
	if authChain, err = e.eventsJSON(ctx, chainIDs); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("send_join: %w", err)
	}
	return state, authChain, ev.JSON(), servers, nil
}

// checkMembershipEvent applies the checks the spec lists for send_join,
// send_leave and invites to a received membership event: an m.room.member
// event of the room under the path's ID, with the given membership, whose
// sender is its state key and a user of origin.
func checkMembershipEvent(ev *rooms.Event, origin, roomID, eventID, membership string) error {
	sk, _ := ev.StateKey()
	switch {
	case ev.EventID() != eventID:
		return badRequest("the event's ID is %s, not %s", ev.EventID(), eventID)
	case ev.RoomID() != roomID:
		return badRequest("the event is of room %s, not %s", ev.RoomID(), roomID)
	case ev.Type() != "m.room.member":
		return badRequest("the event is of type %s, not m.room.member", ev.Type())
	case ev.Membership() != membership:
		return badRequest("the event's membership is %q, not %s", ev.Membership(), membership)
	case ev.SenderServer() != origin:
		return badRequest("the event's sender %s is not a user of %s", ev.Sender(), origin)
	case sk != ev.Sender():
		return badRequest("the event's state key %s is not its sender %s", sk, ev.Sender())
	}
	return nil
}

// acceptMembership runs a checked membership event of origin through the
// inbound pipeline; anything but acceptance is a refusal.
func (e *Engine) acceptMembership(ctx context.Context, origin, roomID string, ev *rooms.Event) error {
	unlock := e.lockRoom(roomID)
	defer unlock()
	h, err := e.head(ctx, roomID)
	if err != nil {
		return err
	}
	if h == nil {
		return notFound("room %s is not known here", roomID)
	}
	if err := e.requireJoinedHere(ctx, roomID); err != nil {
		return err
	}
	// The resident sends the membership on to the other servers in the
	// room; origin only talked to us.
	servers, err := e.Store.JoinedServers(ctx, roomID)
	if err != nil {
		return err
	}
	var dests []string
	for _, s := range servers {
		if s != e.ServerName && s != origin {
			dests = append(dests, s)
		}
	}
	err = e.receiveOne(withFanout(ctx, ev.EventID(), dests), origin, h, ev, true, nil)
	switch {
	case errors.Is(err, ErrDropped), errors.Is(err, ErrRejected):
		return forbidden("%v", err)
	case err != nil:
		return err
	}
	se, err := e.storedEvent(ctx, ev.EventID())
	if err != nil {
		return err
	}
	if se.SoftFailed {
		return forbidden("event %s is not allowed by the room's current state", ev.EventID())
	}
	e.Logger.Info().Str(fieldOrigin, origin).Str(fieldRoomID, roomID).Str(fieldEventID, ev.EventID()).Str("membership", ev.Membership()).Msg("membership accepted")
	return nil
}

type fanoutKey struct{}

type fanout struct {
	eventID string
	dests   []string
}

// withFanout marks a received event to be queued for dests when it is
// accepted: a membership that came through send_join or send_leave,
// which the other servers in the room learn from us.
func withFanout(ctx context.Context, eventID string, dests []string) context.Context {
	return context.WithValue(ctx, fanoutKey{}, fanout{eventID: eventID, dests: dests})
}

// fanoutOf returns the servers an accepted received event is queued for:
// none, unless withFanout marked it.
func fanoutOf(ctx context.Context, ev *rooms.Event) []string {
	f, ok := ctx.Value(fanoutKey{}).(fanout)
	if !ok || f.eventID != ev.EventID() {
		return nil
	}
	return f.dests
}

// requireJoinedHere refuses to act as a resident of a room none of our
// users is joined to: our copy of it may be stale.
func (e *Engine) requireJoinedHere(ctx context.Context, roomID string) error {
	servers, err := e.Store.JoinedServers(ctx, roomID)
	if err != nil {
		return err
	}
	if !slices.Contains(servers, e.ServerName) {
		return notFound("this server has no joined member in room %s", roomID)
	}
	return nil
}
