package homeserver

import (
	"maps"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// recentStates remembers, for a room's recently accepted events, the state
// after each. When several servers send at once the room has several
// forward extremities, and an event names one or some of them as prev
// events: with their states at hand (messages do not change state, so
// they are most often one shared map) the event is judged without
// committing what is staged and reading snapshots back from the store.
// Only accepted events are remembered, with exactly the state the store
// records after them.
type recentStates struct {
	byID  map[string]rooms.StateMap
	order []string // insertion order, for eviction
}

// recentStatesKept bounds the memory: forks are short-lived, and the maps
// are shared between the events of a stretch without state changes.
const recentStatesKept = 256

func (r *recentStates) put(id string, st rooms.StateMap) {
	if r.byID == nil {
		r.byID = make(map[string]rooms.StateMap)
	}
	if _, ok := r.byID[id]; ok {
		return
	}
	if len(r.order) >= recentStatesKept {
		delete(r.byID, r.order[0])
		r.order = r.order[1:]
	}
	r.byID[id] = st
	r.order = append(r.order, id)
}

// statesAfter returns the states after each of ids from memory: remembered
// ones, and the current state for the room's only forward extremity.
// False when one of them is not known here.
func (h *roomHead) statesAfter(ids []string) ([]rooms.StateMap, bool) {
	out := make([]rooms.StateMap, 0, len(ids))
	for _, id := range ids {
		if st, ok := h.after.byID[id]; ok {
			out = append(out, st)
			continue
		}
		if len(h.extremities) == 1 && h.extremities[0] == id {
			out = append(out, h.current)
			continue
		}
		return nil, false
	}
	return out, true
}

// sameState reports whether two states are equal: at once when they are
// the same map, which is the common case.
func sameState(a, b rooms.StateMap) bool {
	return sameMap(a, b) || maps.Equal(a, b)
}

// allSameState reports whether every state equals the first.
func allSameState(states []rooms.StateMap) bool {
	for _, st := range states[1:] {
		if !sameState(states[0], st) {
			return false
		}
	}
	return true
}

// resolutionMemo remembers state resolutions of a room by the identity of
// their input states. Maps of state are never changed once made, and a
// resolution depends on nothing but its inputs, so while two branches of
// a fork keep their states (they send messages) every event resolves to
// the same result, computed once.
type resolutionMemo struct {
	entries []memoEntry
}

type memoEntry struct {
	inputs   []rooms.StateMap // held so that their addresses are not reused
	resolved rooms.StateMap
	// delta is resolved as changes to inputs[0], for the store.
	delta store.StateMap
}

// resolutionsKept bounds the memo: a room has few live forks at a time.
const resolutionsKept = 32

func (m *resolutionMemo) get(inputs []rooms.StateMap) (memoEntry, bool) {
	for _, en := range m.entries {
		if len(en.inputs) != len(inputs) {
			continue
		}
		same := true
		for i := range inputs {
			if !sameMap(en.inputs[i], inputs[i]) {
				same = false
				break
			}
		}
		if same {
			return en, true
		}
	}
	return memoEntry{}, false
}

func (m *resolutionMemo) put(en memoEntry) {
	if len(m.entries) >= resolutionsKept {
		m.entries = m.entries[1:]
	}
	m.entries = append(m.entries, en)
}

// deltaFrom returns resolved as changes to base: the entries that differ
// and, with "", those resolved away.
func deltaFrom(base, resolved rooms.StateMap) store.StateMap {
	delta := store.StateMap{}
	for k, id := range resolved {
		if base[k] != id {
			delta[store.StateKey(k)] = id
		}
	}
	for k := range base {
		if _, ok := resolved[k]; !ok {
			delta[store.StateKey(k)] = ""
		}
	}
	return delta
}
