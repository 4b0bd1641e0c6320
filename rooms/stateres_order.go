package rooms

import (
	"container/heap"
	"fmt"
	"sort"
)

// powerKey is what the reverse topological power ordering compares.
type powerKey struct {
	level    int64
	infinite bool // a creator of room version 12
	ts       int64
	id       string
}

// powerBefore is the spec's comparison for the reverse topological power
// ordering: x < y if x's sender has greater power level (creators of room
// version 12 have infinite power), then smaller origin_server_ts, then
// smaller event_id.
func powerBefore(x, y powerKey) bool {
	if x.infinite != y.infinite {
		return x.infinite
	}
	if x.level != y.level {
		return x.level > y.level
	}
	if x.ts != y.ts {
		return x.ts < y.ts
	}
	return x.id < y.id
}

type powerHeap []powerKey

func (h powerHeap) Len() int           { return len(h) }
func (h powerHeap) Less(i, j int) bool { return powerBefore(h[i], h[j]) }
func (h powerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *powerHeap) Push(x any)        { *h = append(*h, x.(powerKey)) }
func (h *powerHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// reverseTopologicalPowerOrder sorts ids (spec "Reverse topological power
// ordering"): Kahn's algorithm over the auth DAG restricted to ids, taking
// at each step the smallest available event by powerBefore; an event is
// available once every auth event of it that is in ids has been taken.
// Output runs from earliest to latest.
func (r *resolution) reverseTopologicalPowerOrder(ids []string) ([]string, error) {
	in := make(map[string]bool, len(ids))
	for _, id := range ids {
		in[id] = true
	}
	waiting := make(map[string]int, len(ids))
	dependents := make(map[string][]string)
	h := make(powerHeap, 0, len(ids))
	for _, id := range ids {
		ev, err := r.event(id)
		if err != nil {
			return nil, err
		}
		n := 0
		for _, p := range authParents(ev) {
			if in[p] {
				n++
				dependents[p] = append(dependents[p], id)
			}
		}
		waiting[id] = n
		if n == 0 {
			k, err := r.powerKey(ev)
			if err != nil {
				return nil, err
			}
			h = append(h, k)
		}
	}
	heap.Init(&h)
	out := make([]string, 0, len(ids))
	for h.Len() > 0 {
		k := heap.Pop(&h).(powerKey)
		out = append(out, k.id)
		for _, d := range dependents[k.id] {
			waiting[d]--
			if waiting[d] == 0 {
				k, err := r.powerKey(r.events[d])
				if err != nil {
					return nil, err
				}
				heap.Push(&h, k)
			}
		}
	}
	if len(out) != len(ids) {
		return nil, fmt.Errorf("%w: %d of %d power events are on a cycle", ErrAuthCycle, len(ids)-len(out), len(ids))
	}
	return out, nil
}

// powerKey computes ev's sort key; the sender's power level is read
// "when looking at their respective auth_events": the power levels the
// event's own auth events form (defaults, and the version 10 creator's
// 100, when they hold no power-levels event).
func (r *resolution) powerKey(ev *Event) (powerKey, error) {
	state := make(map[StateTuple]*Event, 4)
	for _, id := range authParents(ev) {
		a, err := r.event(id)
		if err != nil {
			return powerKey{}, err
		}
		if k, ok := StateTupleOf(a); ok && (k == CreateTuple || k.Type == typePowerLevels && k.StateKey == "") {
			state[k] = a
		}
	}
	k := powerKey{ts: ev.OriginServerTS(), id: ev.EventID()}
	pl, err := PowerLevelsFrom(state)
	if err != nil {
		// A power-levels event with malformed content cannot have passed
		// the auth rules; rank the sender as a room without one would.
		delete(state, StateTuple{typePowerLevels, ""})
		if pl, err = PowerLevelsFrom(state); err != nil {
			return k, nil
		}
	}
	k.level, k.infinite = pl.UserLevel(ev.Sender())
	return k, nil
}

// mainlineOrder sorts ids (spec "Mainline ordering") based on the
// power-levels event of the partially resolved state: larger mainline
// position first, then smaller origin_server_ts, then smaller event_id.
func (r *resolution) mainlineOrder(ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	// "Let P = P0 be an m.room.power_levels event. Starting with i = 0,
	// repeatedly fetch P_i+1, the m.room.power_levels event in the
	// auth_events of P_i."
	mainline := make(map[string]int)
	if p0, ok := r.lookup(StateTuple{typePowerLevels, ""}); ok {
		for i, p := 0, p0; p != ""; i++ {
			if _, loop := mainline[p]; loop {
				return nil, fmt.Errorf("%w: power levels mainline through %s", ErrAuthCycle, p)
			}
			mainline[p] = i
			ev, err := r.event(p)
			if err != nil {
				return nil, err
			}
			if p, err = r.powerLevelsAuthEvent(ev); err != nil {
				return nil, err
			}
		}
	}
	// The mainline position of e: the index of the first event on the
	// mainline among e's power-levels auth event, its power-levels auth
	// event, and so on (e itself excluded); infinite if none is.
	const infinite = int(^uint(0) >> 1)
	positions := make(map[string]int) // of events whose walk started, by ID
	var position func(id string, depth int) (int, error)
	position = func(id string, depth int) (int, error) {
		if pos, ok := positions[id]; ok {
			return pos, nil
		}
		if depth > len(r.events)+len(mainline)+1 {
			return 0, fmt.Errorf("%w: power levels auth events through %s", ErrAuthCycle, id)
		}
		ev, err := r.event(id)
		if err != nil {
			return 0, err
		}
		parent, err := r.powerLevelsAuthEvent(ev)
		if err != nil {
			return 0, err
		}
		pos := infinite
		if parent != "" {
			if i, on := mainline[parent]; on {
				pos = i
			} else if pos, err = position(parent, depth+1); err != nil {
				return 0, err
			}
		}
		positions[id] = pos
		return pos, nil
	}
	type mainlineKey struct {
		pos int
		ts  int64
		id  string
	}
	keys := make([]mainlineKey, len(ids))
	for i, id := range ids {
		pos, err := position(id, 0)
		if err != nil {
			return nil, err
		}
		keys[i] = mainlineKey{pos: pos, ts: r.events[id].OriginServerTS(), id: id}
	}
	sort.Slice(keys, func(i, j int) bool {
		x, y := keys[i], keys[j]
		if x.pos != y.pos {
			return x.pos > y.pos
		}
		if x.ts != y.ts {
			return x.ts < y.ts
		}
		return x.id < y.id
	})
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.id
	}
	return out, nil
}

// powerLevelsAuthEvent returns the ID of the m.room.power_levels event in
// ev's auth_events, or "".
func (r *resolution) powerLevelsAuthEvent(ev *Event) (string, error) {
	for _, id := range ev.AuthEvents() {
		a, err := r.event(id)
		if err != nil {
			return "", err
		}
		if k, ok := StateTupleOf(a); ok && k.Type == typePowerLevels && k.StateKey == "" {
			return id, nil
		}
	}
	return "", nil
}

// lookup reads the working state: what iterative auth checks applied, over
// the unconflicted state map when that is the base.
func (r *resolution) lookup(k StateTuple) (string, bool) {
	if id, ok := r.overlay[k]; ok {
		return id, true
	}
	if r.baseUnconflicted {
		return r.unconflicted(k)
	}
	return "", false
}

// isRejected reports whether the source marks id as rejected on receipt.
func (r *resolution) isRejected(id string) bool {
	return r.rejected != nil && r.rejected.Rejected(id)
}

// iterativeAuthChecks applies each event of ids, in order, to the working
// state if the authorization rules allow it (spec "Iterative auth checks").
// An event is judged by the state its non-rejected auth events form, with
// every key the auth events selection needs taken from the working state
// where the working state has it (and it was not rejected). In room versions that imply the create
// event by the room ID, that create event stands in when the working state
// has none.
func (r *resolution) iterativeAuthChecks(ids []string) error {
	for _, id := range ids {
		ev, err := r.event(id)
		if err != nil {
			return err
		}
		key, ok := StateTupleOf(ev)
		if !ok {
			continue // only state events can be applied to a state
		}
		authState := make(map[StateTuple]*Event, 8)
		for _, aid := range ev.AuthEvents() {
			if r.isRejected(aid) {
				continue
			}
			a, err := r.event(aid)
			if err != nil {
				return err
			}
			if k, ok := StateTupleOf(a); ok {
				authState[k] = a
			}
		}
		for _, k := range AuthSelection(ev) {
			if wid, ok := r.lookup(k); ok && !r.isRejected(wid) {
				w, err := r.event(wid)
				if err != nil {
					return err
				}
				authState[k] = w
			}
		}
		if _, ok := authState[CreateTuple]; !ok {
			if cid, ok := r.lookup(CreateTuple); ok {
				c, err := r.event(cid)
				if err != nil {
					return err
				}
				authState[CreateTuple] = c
			} else if cid := impliedCreateID(ev); cid != "" {
				c, err := r.event(cid)
				if err != nil {
					return err
				}
				authState[CreateTuple] = c
			}
		}
		if CheckAuth(ev, authState) == nil {
			r.overlay[key] = id
		}
	}
	return nil
}
