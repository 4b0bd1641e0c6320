package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
)

// resident is the scripted resident of one room: it holds the room's
// events and answers the federation requests a joining server makes,
// under every resident server name (all share the room). Events it
// accepts (the joiner's join and whatever the joiner sends) are applied in
// arrival order on top of the current state: a scripted resident does no
// state resolution, which is enough for a joiner whose events extend the
// room's forward extremities.
type resident struct {
	v      rooms.Version
	roomID string
	peers  *peerKeys

	mu          sync.RWMutex
	events      []*rooms.Event
	byID        map[string]*rooms.Event
	state       map[rooms.StateTuple]*rooms.Event
	extremities []string
	// residents names the resident servers, for the directory.
	residents []string
}

// newResident takes the built room's events (in DAG order).
func newResident(v rooms.Version, room *builtRoom, peers *peerKeys) *resident {
	r := &resident{v: v, roomID: room.RoomID, peers: peers, byID: map[string]*rooms.Event{},
		state: map[rooms.StateTuple]*rooms.Event{}}
	for _, ev := range room.Events {
		r.apply(ev)
	}
	return r
}

// apply adds an accepted event; callers hold mu (or own r exclusively).
func (r *resident) apply(ev *rooms.Event) {
	r.events = append(r.events, ev)
	r.byID[ev.EventID()] = ev
	if k, ok := rooms.StateTupleOf(ev); ok {
		r.state[k] = ev
	}
	r.extremities = slices.DeleteFunc(r.extremities, func(id string) bool { return slices.Contains(ev.PrevEvents(), id) })
	r.extremities = append(r.extremities, ev.EventID())
}

// routes registers the room's endpoints on one resident server.
func (r *resident) routes(s *fakeServer) {
	h := func(pattern string, fn func(w http.ResponseWriter, req *http.Request, in inbound)) {
		s.Mux.HandleFunc(pattern, func(w http.ResponseWriter, req *http.Request) {
			in, ok := r.peers.authenticate(w, req, s.Name)
			if !ok {
				return
			}
			fn(w, req, in)
		})
	}
	h("GET /_matrix/federation/v1/make_join/{roomId}/{userId}", r.makeJoin)
	h("PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}", func(w http.ResponseWriter, req *http.Request, in inbound) {
		r.sendJoin(w, req, in, s.Name)
	})
	h("GET /_matrix/federation/v1/state_ids/{roomId}", func(w http.ResponseWriter, req *http.Request, in inbound) { r.stateAt(w, req, true) })
	h("GET /_matrix/federation/v1/state/{roomId}", func(w http.ResponseWriter, req *http.Request, in inbound) { r.stateAt(w, req, false) })
	h("GET /_matrix/federation/v1/event/{eventId}", func(w http.ResponseWriter, req *http.Request, in inbound) {
		r.event(w, req, s.Name)
	})
	h("GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}", r.eventAuth)
	h("POST /_matrix/federation/v1/get_missing_events/{roomId}", r.missingEvents)
	h("GET /_matrix/federation/v1/backfill/{roomId}", func(w http.ResponseWriter, req *http.Request, in inbound) {
		r.backfill(w, req, s.Name)
	})
	h("PUT /_matrix/federation/v1/send/{txnId}", r.send)
	h("GET /_matrix/federation/v1/query/directory", func(w http.ResponseWriter, req *http.Request, in inbound) {
		r.directory(w, req, s.Name)
	})
}

// directory answers /query/directory for the room's canonical alias,
// which lives on the first resident server; every resident is named.
func (r *resident) directory(w http.ResponseWriter, req *http.Request, self string) {
	alias := req.URL.Query().Get("room_alias")
	r.mu.RLock()
	ev := r.state[rooms.StateTuple{Type: "m.room.canonical_alias"}]
	r.mu.RUnlock()
	if ev == nil || ev.Content()["alias"] != alias || alias != aliasOf(self) {
		matrixErr(w, http.StatusNotFound, "M_NOT_FOUND", "no room is known by %s here", alias)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"room_id": r.roomID, "servers": r.residents})
}

// checkRoom answers 404 for a room other than ours.
func (r *resident) checkRoom(w http.ResponseWriter, req *http.Request) bool {
	if req.PathValue("roomId") != r.roomID {
		matrixErr(w, http.StatusNotFound, "M_NOT_FOUND", "unknown room %s", req.PathValue("roomId"))
		return false
	}
	return true
}

// makeJoin answers a join template extending the current extremities.
func (r *resident) makeJoin(w http.ResponseWriter, req *http.Request, in inbound) {
	if !r.checkRoom(w, req) {
		return
	}
	user := req.PathValue("userId")
	uid, err := rooms.ParseUserID(user)
	if err != nil {
		matrixErr(w, http.StatusBadRequest, "M_INVALID_PARAM", "user ID: %v", err)
		return
	}
	if string(uid.Server()) != in.Origin {
		matrixErr(w, http.StatusForbidden, "M_FORBIDDEN", "%s is not a user of %s", user, in.Origin)
		return
	}
	if !slices.Contains(req.URL.Query()["ver"], r.v.ID) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"errcode": "M_INCOMPATIBLE_ROOM_VERSION",
			"error": "the room's version is not among those offered", "room_version": r.v.ID})
		return
	}
	r.mu.RLock()
	t := rooms.EventTemplate{Type: "m.room.member", StateKey: rooms.StringPtr(user), Sender: user, RoomID: r.roomID,
		Content: map[string]any{"membership": "join"}}
	prev := r.extremities
	if len(prev) > rooms.MaxPrevEvents {
		prev = prev[len(prev)-rooms.MaxPrevEvents:]
	}
	var depths []int64
	for _, id := range prev {
		depths = append(depths, r.byID[id].Depth())
	}
	auth := []string{}
	for _, k := range rooms.AuthSelectionFor(r.v, t) {
		if ev, ok := r.state[k]; ok {
			auth = append(auth, ev.EventID())
		}
	}
	r.mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"room_version": r.v.ID,
		"event": map[string]any{
			"type": t.Type, "state_key": user, "sender": user, "room_id": r.roomID,
			"content": t.Content, "prev_events": prev, "auth_events": auth,
			"depth": rooms.NextDepth(depths...), "origin_server_ts": time.Now().UnixMilli(),
		},
	})
}

// checkSignatures verifies a received event's signatures and content
// hash. It may fetch the signers' keys, so callers do not hold mu.
func (r *resident) checkSignatures(ev *rooms.Event) error {
	if err := rooms.VerifyEventSignatures(ev, r.peers); err != nil {
		return fmt.Errorf("signatures: %w", err)
	}
	if !ev.ContentHashValid() {
		return errors.New("content hash does not match")
	}
	return nil
}

// accept checks a PDU whose signatures were checked (known prev and auth
// events, auth against its auth events and the current state) and applies
// it; callers hold mu for writing. A PDU already held is accepted as is.
func (r *resident) accept(ev *rooms.Event) error {
	if _, known := r.byID[ev.EventID()]; known {
		return nil
	}
	if ev.RoomID() != r.roomID {
		return fmt.Errorf("event of room %s, not %s", ev.RoomID(), r.roomID)
	}
	for _, p := range ev.PrevEvents() {
		if r.byID[p] == nil {
			return fmt.Errorf("prev event %s unknown to this resident", p)
		}
	}
	var authEvs []*rooms.Event
	for _, a := range ev.AuthEvents() {
		ae := r.byID[a]
		if ae == nil {
			return fmt.Errorf("auth event %s unknown to this resident", a)
		}
		authEvs = append(authEvs, ae)
	}
	create := r.state[rooms.CreateTuple]
	if err := rooms.CheckAuthEvents(ev, authEvs, create, nil); err != nil {
		return err
	}
	if err := rooms.CheckAuth(ev, r.state); err != nil {
		return err
	}
	r.apply(ev)
	return nil
}

// sendJoin accepts a join and answers the state before it and the auth
// chain, all of it or, with omit_members=true, the state without
// membership events (the room has a name, so no heroes are needed) and the
// auth chain without events already in that state.
func (r *resident) sendJoin(w http.ResponseWriter, req *http.Request, in inbound, self string) {
	if !r.checkRoom(w, req) {
		return
	}
	ev, err := rooms.ParseEvent(r.v, in.Body)
	if err != nil {
		matrixErr(w, http.StatusBadRequest, "M_BAD_JSON", "join event: %v", err)
		return
	}
	sk, _ := ev.StateKey()
	switch {
	case ev.EventID() != req.PathValue("eventId"):
		matrixErr(w, http.StatusBadRequest, "M_INVALID_PARAM", "the event's ID is %s", ev.EventID())
		return
	case ev.Type() != "m.room.member" || ev.Membership() != "join":
		matrixErr(w, http.StatusBadRequest, "M_INVALID_PARAM", "not a join")
		return
	case sk != ev.Sender() || ev.SenderServer() != in.Origin:
		matrixErr(w, http.StatusBadRequest, "M_INVALID_PARAM", "the join must be of a user of %s, by that user", in.Origin)
		return
	}
	if err := r.checkSignatures(ev); err != nil {
		matrixErr(w, http.StatusForbidden, "M_FORBIDDEN", "join refused: %v", err)
		return
	}
	omit := req.URL.Query().Get("omit_members") == "true"
	r.mu.Lock()
	state := make([]*rooms.Event, 0, len(r.state))
	servers := map[string]bool{}
	for k, se := range r.state {
		if k.Type == "m.room.member" {
			if se.Membership() == "join" {
				if u, err := rooms.ParseUserID(k.StateKey); err == nil {
					servers[string(u.Server())] = true
				}
			}
			if omit {
				continue
			}
		}
		state = append(state, se)
	}
	err = r.accept(ev)
	chain := r.authChain(append(slices.Clone(state), ev), omit)
	r.mu.Unlock()
	if err != nil {
		matrixErr(w, http.StatusForbidden, "M_FORBIDDEN", "join refused: %v", err)
		return
	}
	serverList := make([]string, 0, len(servers))
	for s := range servers {
		serverList = append(serverList, s)
	}
	slices.Sort(serverList)
	var b bytes.Buffer
	b.Grow((len(state) + len(chain)) * 700)
	b.WriteString(`{"auth_chain":`)
	writeEventList(&b, chain)
	fmt.Fprintf(&b, `,"members_omitted":%t,"origin":%q,"servers_in_room":`, omit, self)
	list, _ := json.Marshal(serverList)
	b.Write(list)
	b.WriteString(`,"state":`)
	writeEventList(&b, state)
	b.WriteString("}")
	w.Header().Set("Content-Type", "application/json")
	w.Write(b.Bytes())
}

// writeEventList writes events as a JSON array of their canonical JSON.
func writeEventList(b *bytes.Buffer, events []*rooms.Event) {
	b.WriteByte('[')
	for i, ev := range events {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(ev.JSON())
	}
	b.WriteByte(']')
}

// authChain returns the auth chains of events; with excludeRoots, the
// events themselves are left out even where one is in another's chain.
// Callers hold mu.
func (r *resident) authChain(events []*rooms.Event, excludeRoots bool) []*rooms.Event {
	seen := map[string]bool{}
	roots := map[string]bool{}
	for _, ev := range events {
		roots[ev.EventID()] = true
	}
	var out []*rooms.Event
	var stack []string
	for _, ev := range events {
		stack = append(stack, ev.AuthEvents()...)
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[id] {
			continue
		}
		seen[id] = true
		ae := r.byID[id]
		if ae == nil {
			continue
		}
		if !(excludeRoots && roots[id]) {
			out = append(out, ae)
		}
		stack = append(stack, ae.AuthEvents()...)
	}
	return out
}

// stateBefore returns the room state before the event at eventID, from
// the events in DAG order. Callers hold mu.
func (r *resident) stateBefore(eventID string) ([]*rooms.Event, bool) {
	state := map[rooms.StateTuple]*rooms.Event{}
	for _, ev := range r.events {
		if ev.EventID() == eventID {
			out := make([]*rooms.Event, 0, len(state))
			for _, se := range state {
				out = append(out, se)
			}
			return out, true
		}
		if k, ok := rooms.StateTupleOf(ev); ok {
			state[k] = ev
		}
	}
	return nil, false
}

// stateAt answers /state_ids (ids) or /state at ?event_id=.
func (r *resident) stateAt(w http.ResponseWriter, req *http.Request, ids bool) {
	if !r.checkRoom(w, req) {
		return
	}
	at := req.URL.Query().Get("event_id")
	r.mu.RLock()
	state, ok := r.stateBefore(at)
	var chain []*rooms.Event
	if ok {
		chain = r.authChain(state, false)
	}
	r.mu.RUnlock()
	if !ok {
		matrixErr(w, http.StatusNotFound, "M_NOT_FOUND", "unknown event %s", at)
		return
	}
	if ids {
		idsOf := func(evs []*rooms.Event) []string {
			out := make([]string, len(evs))
			for i, ev := range evs {
				out[i] = ev.EventID()
			}
			return out
		}
		writeJSON(w, http.StatusOK, map[string]any{"pdu_ids": idsOf(state), "auth_chain_ids": idsOf(chain)})
		return
	}
	var b bytes.Buffer
	b.WriteString(`{"auth_chain":`)
	writeEventList(&b, chain)
	b.WriteString(`,"pdus":`)
	writeEventList(&b, state)
	b.WriteString("}")
	w.Header().Set("Content-Type", "application/json")
	w.Write(b.Bytes())
}

// writeTransaction answers a transaction-shaped list of PDUs.
func writeTransaction(w http.ResponseWriter, origin string, pdus []*rooms.Event) {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"origin":%q,"origin_server_ts":%d,"pdus":`, origin, time.Now().UnixMilli())
	writeEventList(&b, pdus)
	b.WriteString("}")
	w.Header().Set("Content-Type", "application/json")
	w.Write(b.Bytes())
}

func (r *resident) event(w http.ResponseWriter, req *http.Request, self string) {
	r.mu.RLock()
	ev := r.byID[req.PathValue("eventId")]
	r.mu.RUnlock()
	if ev == nil {
		matrixErr(w, http.StatusNotFound, "M_NOT_FOUND", "unknown event")
		return
	}
	writeTransaction(w, self, []*rooms.Event{ev})
}

func (r *resident) eventAuth(w http.ResponseWriter, req *http.Request, in inbound) {
	if !r.checkRoom(w, req) {
		return
	}
	r.mu.RLock()
	ev := r.byID[req.PathValue("eventId")]
	var chain []*rooms.Event
	if ev != nil {
		chain = r.authChain([]*rooms.Event{ev}, true)
	}
	r.mu.RUnlock()
	if ev == nil {
		matrixErr(w, http.StatusNotFound, "M_NOT_FOUND", "unknown event")
		return
	}
	var b bytes.Buffer
	b.WriteString(`{"auth_chain":`)
	writeEventList(&b, chain)
	b.WriteString("}")
	w.Header().Set("Content-Type", "application/json")
	w.Write(b.Bytes())
}

// walkBack returns up to limit events reached from start through
// prev_events, newest first, never entering stop; includeStart says
// whether the start events themselves count. Callers hold mu.
func (r *resident) walkBack(start, stop []string, limit int, includeStart bool) []*rooms.Event {
	seen := map[string]bool{}
	for _, id := range stop {
		seen[id] = true
	}
	var out []*rooms.Event
	queue := []string{}
	for _, id := range start {
		if includeStart {
			queue = append(queue, id)
		} else if ev := r.byID[id]; ev != nil {
			seen[id] = true
			queue = append(queue, ev.PrevEvents()...)
		}
	}
	for len(queue) > 0 && len(out) < limit {
		id := queue[0]
		queue = queue[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		ev := r.byID[id]
		if ev == nil {
			continue
		}
		out = append(out, ev)
		queue = append(queue, ev.PrevEvents()...)
	}
	return out
}

func (r *resident) missingEvents(w http.ResponseWriter, req *http.Request, in inbound) {
	if !r.checkRoom(w, req) {
		return
	}
	var body struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    int      `json:"limit"`
		MinDepth int64    `json:"min_depth"`
	}
	if err := json.Unmarshal(in.Body, &body); err != nil {
		matrixErr(w, http.StatusBadRequest, "M_BAD_JSON", "body: %v", err)
		return
	}
	if body.Limit <= 0 {
		body.Limit = 10
	}
	r.mu.RLock()
	evs := r.walkBack(body.Latest, body.Earliest, min(body.Limit, 100), false)
	r.mu.RUnlock()
	evs = slices.DeleteFunc(evs, func(ev *rooms.Event) bool { return ev.Depth() < body.MinDepth })
	slices.Reverse(evs) // oldest first
	var b bytes.Buffer
	b.WriteString(`{"events":`)
	writeEventList(&b, evs)
	b.WriteString("}")
	w.Header().Set("Content-Type", "application/json")
	w.Write(b.Bytes())
}

func (r *resident) backfill(w http.ResponseWriter, req *http.Request, self string) {
	if !r.checkRoom(w, req) {
		return
	}
	q := req.URL.Query()
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit <= 0 {
		matrixErr(w, http.StatusBadRequest, "M_INVALID_PARAM", "limit must be a positive integer")
		return
	}
	r.mu.RLock()
	evs := r.walkBack(q["v"], nil, min(limit, 100), true)
	r.mu.RUnlock()
	writeTransaction(w, self, evs)
}

// send accepts the joiner's PDUs; EDUs are ignored.
func (r *resident) send(w http.ResponseWriter, req *http.Request, in inbound) {
	var body struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := json.Unmarshal(in.Body, &body); err != nil {
		matrixErr(w, http.StatusBadRequest, "M_BAD_JSON", "transaction: %v", err)
		return
	}
	results := map[string]any{}
	var checked []*rooms.Event
	for _, raw := range body.PDUs {
		ev, err := rooms.ParseEvent(r.v, raw)
		if err != nil {
			continue // no event ID to report it under
		}
		if err := r.checkSignatures(ev); err != nil {
			results[ev.EventID()] = map[string]string{"error": err.Error()}
			continue
		}
		checked = append(checked, ev)
	}
	r.mu.Lock()
	for _, ev := range checked {
		if err := r.accept(ev); err != nil {
			results[ev.EventID()] = map[string]string{"error": err.Error()}
			continue
		}
		results[ev.EventID()] = map[string]any{}
	}
	r.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"pdus": results})
}

// joinedMembers counts the members joined now.
func (r *resident) joinedMembers() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(memberIDs(r.state))
}

// serversOf lists the resident server names.
func serversOf(servers []*fakeServer) string {
	names := make([]string, len(servers))
	for i, s := range servers {
		names[i] = s.Name
	}
	return strings.Join(names, ",")
}
