package homeserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
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

// refuseJoinIfPartial refuses to act as the resident of a join while our
// state of the room is partial: the joiner would get our partial state
// as if it were whole. 400 M_UNABLE_TO_GRANT_JOIN tells it to try
// another server.
func (e *Engine) refuseJoinIfPartial(ctx context.Context, roomID, what string) error {
	if e.isPartialRoom(ctx, roomID) {
		return withCode(KindBadRequest, "M_UNABLE_TO_GRANT_JOIN", "%s: this server holds only partial state of room %s (its full state is being fetched); join through another server", what, roomID)
	}
	return nil
}

// makeMember builds the template of make_join, make_leave and make_knock:
// a membership event for userID, a user of origin, following the room's
// forward extremities, that the current state allows. versions, when not
// nil, must hold the room's version.
func (e *Engine) makeMember(ctx context.Context, origin, roomID, userID, membership string, versions []string) (string, []byte, error) {
	what := "make_" + membership
	// Our partial state lacks most memberships, the requester's among
	// them: another server of the room must answer.
	if membership == "join" {
		if err := e.refuseJoinIfPartial(ctx, roomID, what); err != nil {
			return "", nil, err
		}
	} else if err := e.refuseIfPartial(ctx, roomID, what); err != nil {
		return "", nil, err
	}
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
	state, authChain, join, servers, _, err = e.SendJoinOmitting(ctx, origin, roomID, eventID, raw, false)
	return state, authChain, join, servers, err
}

// SendJoinOmitting answers send_join as SendJoin does; with omitMembers
// (the joiner asked for partial state) the state leaves out membership
// events, except those of the room's heroes when it has neither a name
// nor a canonical alias, the auth chain leaves out events already in the
// state, and membersOmitted is true. servers (servers_in_room) names the
// servers with joined members before the join either way.
func (e *Engine) SendJoinOmitting(ctx context.Context, origin, roomID, eventID string, raw []byte, omitMembers bool) (state, authChain [][]byte, join []byte, servers []string, membersOmitted bool, err error) {
	state, authChain, join, servers, err = e.sendJoin(ctx, origin, roomID, eventID, raw, omitMembers)
	return state, authChain, join, servers, omitMembers && err == nil, err
}

func (e *Engine) sendJoin(ctx context.Context, origin, roomID, eventID string, raw []byte, omitMembers bool) (state, authChain [][]byte, join []byte, servers []string, err error) {
	if err := e.refuseJoinIfPartial(ctx, roomID, "send_join"); err != nil {
		return nil, nil, nil, nil, err
	}
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
	if omitMembers {
		if before, err = e.withoutMembers(ctx, before, ev); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("send_join: %w", err)
		}
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
	if omitMembers {
		// The spec lets a partial answer leave out of the auth chain the
		// events its state holds already.
		inState := make(map[string]bool, len(stateIDs))
		for _, id := range stateIDs {
			inState[id] = true
		}
		chainIDs = slices.DeleteFunc(chainIDs, func(id string) bool { return inState[id] })
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
	if err := e.refuseIfPartial(ctx, roomID, "send_"+ev.Membership()); err != nil {
		return err
	}
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

// maxHeroes is how many members name a room without a name or alias
// (the client-server API's m.heroes).
const maxHeroes = 5

// withoutMembers returns state without its membership events, for the
// partial send_join answer to join. The memberships the join names as
// auth events stay (the joiner's invite, a restricted join's authoriser):
// the joiner needs them to authorise its join. A room with neither an
// m.room.name nor an m.room.canonical_alias keeps the memberships of its
// heroes, as the spec requires so that the joiner can name the room: up
// to five joined or invited members other than the joiner, by user ID.
func (e *Engine) withoutMembers(ctx context.Context, state store.StateMap, join *rooms.Event) (store.StateMap, error) {
	joiner := join.Sender()
	authOfJoin := make(map[string]bool, len(join.AuthEvents()))
	for _, id := range join.AuthEvents() {
		authOfJoin[id] = true
	}
	_, named := state[store.StateKey{Type: "m.room.name"}]
	_, aliased := state[store.StateKey{Type: "m.room.canonical_alias"}]
	out := make(store.StateMap, len(state))
	var members []store.StateKey
	for k, id := range state {
		switch {
		case k.Type != "m.room.member", authOfJoin[id]:
			out[k] = id
		case k.StateKey != joiner:
			members = append(members, k)
		}
	}
	if named || aliased {
		return out, nil
	}
	slices.SortFunc(members, func(a, b store.StateKey) int { return strings.Compare(a.StateKey, b.StateKey) })
	heroes := 0
	for _, k := range members {
		if heroes == maxHeroes {
			break
		}
		se, err := e.storedEvent(ctx, state[k])
		if err != nil {
			return nil, fmt.Errorf("member %s: %w", k.StateKey, err)
		}
		if m := se.Event.Membership(); m == "join" || m == "invite" {
			out[k] = state[k]
			heroes++
		}
	}
	return out, nil
}
