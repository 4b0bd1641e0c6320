package rooms

import (
	"fmt"
	"maps"
)

// StateMap is a room state: each (type, state_key) pair to the ID of the
// event that holds it.
type StateMap map[StateTuple]string

// ResolveState computes the resolution of states, state maps of room
// version v (spec, room version 2 "State resolution", and its version 12
// changes from MSC4297 "State resolution v2.1"). Events are read through
// src, which must hold every event of the state sets and of their auth
// chains. cache remembers auth chains across calls (keep one per room); nil
// uses a fresh one. The input maps are not modified.
//
// The work grows with the conflicted part of the states and its auth
// chains: the unconflicted events are only looked up by key, never walked,
// when src implements AuthChildrenSource. Splitting the states into
// unconflicted and conflicted parts reads every key of every state once,
// and the result is a copy of states[0] with the changes applied;
// ResolveStateDelta skips that copy.
//
// Errors wrap ErrEventNotFound for events src does not hold and ErrAuthCycle
// for cyclic auth graphs; a state map entry naming an event of another key
// or a non-state event is an error too.
func ResolveState(v Version, states []StateMap, src EventSource, cache *AuthChainCache) (StateMap, error) {
	delta, err := ResolveStateDelta(v, states, src, cache)
	if err != nil {
		return nil, err
	}
	if len(states) == 0 {
		return StateMap{}, nil
	}
	out := maps.Clone(states[0])
	for k, id := range delta {
		if id == "" {
			delete(out, k)
		} else {
			out[k] = id
		}
	}
	return out, nil
}

// ResolveStateDelta is ResolveState returning the resolved state as its
// differences from states[0]: each key whose event changes, mapped to the
// new event ID, or to "" where the resolved state has no event for the key.
// With no states it returns an empty delta.
func ResolveStateDelta(v Version, states []StateMap, src EventSource, cache *AuthChainCache) (StateMap, error) {
	switch v.StateRes {
	case StateResV2, StateResV21:
	default:
		return nil, fmt.Errorf("state resolution: room version %s has no known algorithm (%d)", v.ID, v.StateRes)
	}
	if len(states) == 0 {
		return StateMap{}, nil
	}
	if cache == nil {
		cache = NewAuthChainCache()
	}
	r := &resolution{
		v:       v,
		src:     src,
		cache:   cache,
		states:  states,
		events:  make(map[string]*Event),
		overlay: make(StateMap),
	}
	r.chainSrc, _ = src.(AuthChainSource)
	r.kids, _ = src.(AuthChildrenSource)
	r.rejected, _ = src.(RejectedSource)
	if err := r.run(); err != nil {
		return nil, fmt.Errorf("state resolution: %w", err)
	}
	return r.delta(), nil
}

// resolution holds the working data of one ResolveState call.
type resolution struct {
	v        Version
	src      EventSource
	cache    *AuthChainCache
	chainSrc AuthChainSource
	kids     AuthChildrenSource
	rejected RejectedSource
	states   []StateMap

	// conflictedKeys are the keys not held by every state with the same
	// event; every other key of states[0] is unconflicted.
	conflictedKeys map[StateTuple]struct{}
	// conflicted is the conflicted state set, perSet[i] its part in states[i].
	conflicted []string
	perSet     [][]string

	events map[string]*Event
	// inUnconflictedChain memoizes whether an event is in the auth chain of
	// some unconflicted event.
	inUnconflictedChain map[string]bool

	// overlay holds what iterative auth checks applied; baseUnconflicted
	// says whether the unconflicted state map lies beneath it (v2 step 2)
	// or the empty map (v2.1 step 2).
	overlay          StateMap
	baseUnconflicted bool
}

func (r *resolution) run() error {
	r.split()
	full, err := r.fullConflictedSet()
	if err != nil {
		return err
	}
	// Step 1: "Select the set X of all power events that appear in the full
	// conflicted set. For each such power event P, enlarge X by adding the
	// events in the auth chain of P which also belong to the full conflicted
	// set. Sort X into a list using the reverse topological power ordering."
	inX := make(map[string]bool)
	var x []string
	addX := func(id string) {
		if !inX[id] {
			inX[id] = true
			x = append(x, id)
		}
	}
	for _, id := range full.list {
		ev := r.events[id]
		if !isPowerEvent(ev) {
			continue
		}
		addX(id)
		chain, err := r.chain(id)
		if err != nil {
			return err
		}
		for _, a := range chain {
			if full.has[a] {
				addX(a)
			}
		}
	}
	sortedX, err := r.reverseTopologicalPowerOrder(x)
	if err != nil {
		return err
	}
	// Step 2: iterative auth checks over X, starting from the unconflicted
	// state map (v2) or from an empty state map (v2.1, MSC4297
	// modification 1).
	r.baseUnconflicted = r.v.StateRes == StateResV2
	if err := r.iterativeAuthChecks(sortedX); err != nil {
		return err
	}
	// Step 3: "Take all remaining events that weren't picked in step 1 and
	// order them by the mainline ordering based on the power level in the
	// partially resolved state obtained in step 2."
	rest := make([]string, 0, len(full.list)-len(x))
	for _, id := range full.list {
		if !inX[id] {
			rest = append(rest, id)
		}
	}
	sortedRest, err := r.mainlineOrder(rest)
	if err != nil {
		return err
	}
	// Step 4: iterative auth checks on the partial state over that list.
	return r.iterativeAuthChecks(sortedRest)
}

// delta is step 5, "Update the result by replacing any event with the
// event with the same key from the unconflicted state map, if such an event
// exists, to get the final resolved state", expressed as changes to
// states[0]. Only conflicted keys and keys iterative auth checks wrote can
// differ from it: every other key of states[0] is unconflicted.
func (r *resolution) delta() StateMap {
	out := make(StateMap)
	resolve := func(k StateTuple) {
		if _, ok := r.unconflicted(k); ok {
			return // unconflicted: states[0] already holds it
		}
		id, ok := r.overlay[k]
		old, had := r.states[0][k]
		switch {
		case ok && id != old:
			out[k] = id
		case !ok && had:
			out[k] = ""
		}
	}
	for k := range r.conflictedKeys {
		resolve(k)
	}
	for k := range r.overlay {
		resolve(k)
	}
	return out
}

// split divides the states into the unconflicted state map and the
// conflicted state set (spec "Unconflicted state map and conflicted state
// set": a key present in every state with the same event is unconflicted;
// every other event is conflicted).
func (r *resolution) split() {
	r.conflictedKeys = make(map[StateTuple]struct{})
	first := r.states[0]
	for k, id := range first {
		for _, s := range r.states[1:] {
			if other, ok := s[k]; !ok || other != id {
				r.conflictedKeys[k] = struct{}{}
				break
			}
		}
	}
	for _, s := range r.states[1:] {
		for k := range s {
			if _, ok := first[k]; !ok {
				r.conflictedKeys[k] = struct{}{}
			}
		}
	}
	seen := make(map[string]bool)
	r.perSet = make([][]string, len(r.states))
	for k := range r.conflictedKeys {
		for i, s := range r.states {
			id, ok := s[k]
			if !ok {
				continue
			}
			r.perSet[i] = append(r.perSet[i], id)
			if !seen[id] {
				seen[id] = true
				r.conflicted = append(r.conflicted, id)
			}
		}
	}
}

// unconflicted returns the unconflicted state map's event for k.
func (r *resolution) unconflicted(k StateTuple) (string, bool) {
	if _, c := r.conflictedKeys[k]; c {
		return "", false
	}
	id, ok := r.states[0][k]
	return id, ok
}

// isUnconflicted reports whether ev is in the unconflicted state map.
func (r *resolution) isUnconflicted(ev *Event) bool {
	k, ok := StateTupleOf(ev)
	if !ok {
		return false
	}
	id, ok := r.unconflicted(k)
	return ok && id == ev.EventID()
}

// event returns the event id, fetched once per resolution.
func (r *resolution) event(id string) (*Event, error) {
	if ev, ok := r.events[id]; ok {
		return ev, nil
	}
	ev, err := fetchEvent(r.src, id)
	if err != nil {
		return nil, err
	}
	r.events[id] = ev
	return ev, nil
}

// chain returns the auth chain of id, from the source's index or the cache.
func (r *resolution) chain(id string) ([]string, error) {
	if r.chainSrc != nil {
		return r.chainSrc.AuthChain(id)
	}
	return r.cache.AuthChain(r.src, id)
}

// isPowerEvent is the spec's "Power events" definition: "a state event with
// type m.room.power_levels or m.room.join_rules, or a state event with type
// m.room.member where the membership is leave or ban and the sender does not
// match the state_key".
func isPowerEvent(ev *Event) bool {
	sk, ok := ev.StateKey()
	if !ok {
		return false
	}
	switch ev.Type() {
	case typePowerLevels, typeJoinRules:
		return true
	case typeMember:
		m := ev.Membership()
		return (m == membershipLeave || m == membershipBan) && ev.Sender() != sk
	}
	return false
}

// idSet is a set of event IDs that also keeps them in insertion order, so
// nothing downstream depends on map iteration order.
type idSet struct {
	has  map[string]bool
	list []string
}

func (s *idSet) add(id string) {
	if s.has == nil {
		s.has = make(map[string]bool)
	}
	if !s.has[id] {
		s.has[id] = true
		s.list = append(s.list, id)
	}
}
