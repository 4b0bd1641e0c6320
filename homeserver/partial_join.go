package homeserver

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// Partial-state ("faster") joins.
//
// A join through a resident that honours omit_members gets the room's
// state without most membership events. The room is usable at once: our
// users send under the state we know (our join, the create event, power
// levels, join rules), and events of other servers are judged against it,
// where a membership the partial state lacks is taken from the event's
// own auth events (which passed auth against their own auth chains). In
// the background the full state before our join is fetched (/state) and
// verified exactly as a full join's answer is; then the states of the
// events taken in meanwhile and the current state are recomputed from it,
// and the room is full. The record of a partial room is in the store, so
// a restart resumes the resync.

// PartialJoiner is what the engine asks of a resident to join a room
// with partial state. *federation.Client satisfies it.
type PartialJoiner interface {
	// SendJoinOmitMembers sends the signed join with omit_members=true
	// and returns the answer's state and auth chain, the join as the
	// resident returned it (nil when absent), whether membership events
	// were left out of the state, and the servers in the room before the
	// join.
	SendJoinOmitMembers(ctx context.Context, server, roomID, eventID string, event []byte) (state, authChain [][]byte, join []byte, membersOmitted bool, serversInRoom []string, err error)
}

// partialJoinAnswer is a send_join answer that may hold partial state.
type partialJoinAnswer struct {
	State, AuthChain [][]byte
	Event            []byte
	MembersOmitted   bool
	ServersInRoom    []string
}

// FullStateFetcher fetches the state before an event with its auth chain
// (GET /state), with room for a large room's whole state.
type FullStateFetcher interface {
	FullState(ctx context.Context, server, roomID, eventID string) (state, authChain [][]byte, err error)
}

// partialRooms is the engine's memory of the rooms whose state is
// partial, loaded from the store on first use.
type partialRooms struct {
	mu     sync.Mutex
	loaded bool
	rooms  map[string]store.PartialRoom
	// running marks rooms whose resync runs in this process.
	running map[string]bool
	// ctx is the lifetime of background resyncs (StartPartialResyncs);
	// nil until then.
	ctx context.Context
	wg  sync.WaitGroup
}

// partialRoom returns the partial-state record of roomID and whether the
// room's state is partial.
func (e *Engine) partialRoom(ctx context.Context, roomID string) (store.PartialRoom, bool) {
	p := &e.partial
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.loaded {
		all, err := e.Store.PartialStateRooms(ctx)
		if err != nil {
			// Not loaded: asked again next time. Meanwhile the room is
			// taken as full, which at worst refuses what partial state
			// would have allowed.
			e.Logger.Error().Err(err).Msg("reading the partial-state rooms failed")
			return store.PartialRoom{}, false
		}
		p.rooms = make(map[string]store.PartialRoom, len(all))
		for _, r := range all {
			p.rooms[r.RoomID] = r
		}
		p.loaded = true
	}
	r, ok := p.rooms[roomID]
	return r, ok
}

// isPartialRoom reports whether roomID's state is partial.
func (e *Engine) isPartialRoom(ctx context.Context, roomID string) bool {
	_, ok := e.partialRoom(ctx, roomID)
	return ok
}

// PartialState reports whether this server holds only partial state of
// roomID (a faster join whose full state is still being fetched).
func (e *Engine) PartialState(ctx context.Context, roomID string) bool {
	return e.isPartialRoom(ctx, roomID)
}

func (e *Engine) setPartial(r store.PartialRoom, partial bool) {
	p := &e.partial
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rooms == nil {
		p.rooms = make(map[string]store.PartialRoom)
	}
	if partial {
		p.rooms[r.RoomID] = r
	} else {
		delete(p.rooms, r.RoomID)
	}
}

// partialStateRefusal refuses a request that needs the full state of a
// room whose state is partial here: 404 M_NOT_FOUND, so that the
// requester asks another server of the room.
func partialStateRefusal(roomID, what string) error {
	return withCode(KindNotFound, "M_NOT_FOUND", "%s: this server holds only partial state of room %s (its full state is being fetched); ask another server in the room", what, roomID)
}

// refuseIfPartial refuses a read that needs full state while roomID's
// state is partial.
func (e *Engine) refuseIfPartial(ctx context.Context, roomID, what string) error {
	if e.isPartialRoom(ctx, roomID) {
		return partialStateRefusal(roomID, what)
	}
	return nil
}

// partialJoinerOf returns the remote as a PartialJoiner when this join
// should ask for partial state: partial-state joins are on, the
// background resyncs run, the remote can do them, and this server is not
// in the room (a room we are in takes the join through the inbound
// pipeline, which needs its state whole; an invite or an old membership
// is no obstacle).
func (e *Engine) partialJoinerOf(ctx context.Context, joiner Joiner, roomID string) (PartialJoiner, bool) {
	if !e.PartialStateJoins || !e.backgroundReady() {
		return nil, false
	}
	pj, ok := joiner.(PartialJoiner)
	if !ok {
		return nil, false
	}
	if _, in, err := e.roomVersion(ctx, roomID); err != nil || in {
		return nil, false
	}
	return pj, true
}

// joinPartially finishes a join handshake with partial state: join is
// signed, the resident at server answers with the state it chooses. An
// answer with the full state is taken as a full join.
func (e *Engine) joinPartially(ctx context.Context, pj PartialJoiner, server, roomID string, v rooms.Version, join *rooms.Event) (*rooms.Event, error) {
	var ans partialJoinAnswer
	var err error
	ans.State, ans.AuthChain, ans.Event, ans.MembersOmitted, ans.ServersInRoom, err = pj.SendJoinOmitMembers(ctx, server, roomID, join.EventID(), join.JSON())
	if err != nil {
		return nil, fmt.Errorf("send_join: %w", err)
	}
	if join, err = e.returnedJoin(ctx, v, join, ans.Event); err != nil {
		return nil, err
	}
	state := ans.State
	if ans.MembersOmitted {
		state = withJoinAuthMembers(v, join, ans.State, ans.AuthChain)
	}
	checked, err := e.verifyJoinResponse(ctx, v, roomID, join, state, ans.AuthChain)
	if err != nil {
		return nil, fmt.Errorf("send_join: %w", err)
	}
	if !ans.MembersOmitted {
		if err := e.persistJoin(ctx, roomID, server, join, checked); err != nil {
			return nil, err
		}
		return join, nil
	}
	// The servers to send to and to fetch the full state from: the
	// resident first, then those it names and those the state shows.
	servers := []string{server}
	for _, s := range append(slices.Clone(ans.ServersInRoom), checked.servers...) {
		if s != "" && s != e.ServerName && !slices.Contains(servers, s) {
			servers = append(servers, s)
		}
	}
	rec := store.PartialRoom{RoomID: roomID, JoinEventID: join.EventID(), Servers: servers}
	// The record goes first: a crash before the join is persisted leaves
	// a record of a room we are not in, which the resume drops.
	if err := e.Store.MarkPartialState(ctx, rec); err != nil {
		return nil, fmt.Errorf("join %s: %w", roomID, err)
	}
	e.setPartial(rec, true)
	checked.servers = servers
	if err := e.persistJoin(ctx, roomID, server, join, checked); err != nil {
		e.setPartial(rec, false)
		if cerr := e.Store.ClearPartialState(context.WithoutCancel(ctx), roomID); cerr != nil {
			e.Logger.Error().Err(cerr).Str(fieldRoomID, roomID).Msg("forgetting the partial state of a failed join failed; the resume drops it")
		}
		return nil, err
	}
	e.Logger.Info().Str(fieldRoomID, roomID).Str("via", server).Int("state_events", len(checked.state)).Strs("servers_in_room", servers).
		Msg("joined with partial state; fetching the full state in the background")
	e.startResync(rec)
	return join, nil
}

// withJoinAuthMembers returns the state of a partial answer with the
// membership events among the join's auth events added where the state
// has none for their user (a restricted join's authoriser, say): the
// rules read them to authorise the join, and they passed auth against
// their own auth chain.
func withJoinAuthMembers(v rooms.Version, join *rooms.Event, state, chain [][]byte) [][]byte {
	have := map[rooms.StateTuple]bool{}
	for _, raw := range state {
		if ev, err := rooms.ParseEvent(v, raw); err == nil {
			if k, ok := rooms.StateTupleOf(ev); ok {
				have[k] = true
			}
		}
	}
	wanted := map[string]bool{}
	for _, id := range join.AuthEvents() {
		wanted[id] = true
	}
	out := state
	for _, raw := range chain {
		ev, err := rooms.ParseEvent(v, raw)
		if err != nil || !wanted[ev.EventID()] || ev.Type() != "m.room.member" {
			continue
		}
		k, _ := rooms.StateTupleOf(ev)
		if !have[k] {
			have[k] = true
			out = append(slices.Clip(out), raw)
		}
	}
	return out
}

// partialAuthState is the hook of the inbound pipeline for rooms whose
// state is partial: the state an event is judged against (the keys the
// rules read of it) gets, for each membership it lacks, the membership
// among the event's auth events, which passed auth against their own
// auth events. A membership the partial state holds is never replaced,
// and an event whose auth events lack the membership (a sender who never
// joined) is still refused. For a room with full state, state is
// returned as it is.
func (e *Engine) partialAuthState(ctx context.Context, ev *rooms.Event, state map[rooms.StateTuple]*rooms.Event, authEvs []*rooms.Event) map[rooms.StateTuple]*rooms.Event {
	if !e.isPartialRoom(ctx, ev.RoomID()) {
		return state
	}
	var out map[rooms.StateTuple]*rooms.Event
	for _, k := range authKeys(ev) {
		if k.Type != "m.room.member" {
			continue
		}
		if _, ok := state[k]; ok {
			continue
		}
		for _, a := range authEvs {
			if ak, ok := rooms.StateTupleOf(a); ok && ak == k {
				if out == nil {
					out = make(map[rooms.StateTuple]*rooms.Event, len(state)+2)
					for kk, vv := range state {
						out[kk] = vv
					}
				}
				out[k] = a
				break
			}
		}
	}
	if out == nil {
		return state
	}
	return out
}

// partialDestinations returns the servers a local event goes to in a room
// whose state is partial: those the state shows joined plus those the
// resident named in servers_in_room (the state lacks their members). For
// a room with full state, joined is returned as it is.
func (e *Engine) partialDestinations(ctx context.Context, roomID string, joined *joinedCache) *joinedCache {
	rec, ok := e.partialRoom(ctx, roomID)
	if !ok {
		return joined
	}
	servers := slices.Clone(joined.servers)
	for _, s := range rec.Servers {
		if !slices.Contains(servers, s) {
			servers = append(servers, s)
		}
	}
	slices.Sort(servers)
	out := *joined
	out.servers = servers
	return &out
}

// partialServerKnown reports whether origin is a server of a partial
// room by the resident's servers_in_room: the partial state lacks its
// members, so it counts as in the room for reads of it.
func (e *Engine) partialServerKnown(ctx context.Context, roomID, origin string) bool {
	rec, ok := e.partialRoom(ctx, roomID)
	return ok && slices.Contains(rec.Servers, origin)
}
