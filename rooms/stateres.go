package rooms

import (
	"errors"
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
// ResolveStateDelta skips that copy, and ResolveSplit takes states already
// split, for engines that can split them without reading every key.
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
	if len(states) == 0 {
		if _, err := stateResAlgorithm(v); err != nil {
			return nil, err
		}
		return StateMap{}, nil
	}
	split := SplitStateMaps(states)
	resolved, err := ResolveSplit(v, split, src, cache)
	if err != nil {
		return nil, err
	}
	delta := make(StateMap)
	for _, part := range split.Conflicted {
		for k := range part {
			id, ok := resolved[k]
			old, had := states[0][k]
			switch {
			case ok && id != old:
				delta[k] = id
			case !ok && had:
				delta[k] = ""
			}
		}
	}
	for k, id := range resolved {
		if states[0][k] != id {
			delta[k] = id // includes keys no state holds, written by the auth checks
		}
	}
	return delta, nil
}

// stateResAlgorithm returns v's algorithm, or an error for a version
// without a known one.
func stateResAlgorithm(v Version) (StateResAlgorithm, error) {
	switch v.StateRes {
	case StateResV2, StateResV21:
		return v.StateRes, nil
	default:
		return 0, fmt.Errorf("state resolution: room version %s has no known algorithm (%d)", v.ID, v.StateRes)
	}
}

// StateLookup reads a state map by key. Resolution reads the unconflicted
// state map through it by key only; Range is called only for sources
// without AuthChildrenSource. StateMap implements it; an engine that keeps
// state as shared snapshots can pass its own.
type StateLookup interface {
	// Get returns the event ID held for k.
	Get(k StateTuple) (eventID string, ok bool)
	// Len returns the number of keys held.
	Len() int
	// Range calls fn for each entry until fn returns false.
	Range(fn func(k StateTuple, eventID string) bool)
}

// Get implements StateLookup.
func (m StateMap) Get(k StateTuple) (string, bool) {
	id, ok := m[k]
	return id, ok
}

// Len implements StateLookup.
func (m StateMap) Len() int { return len(m) }

// Range implements StateLookup.
func (m StateMap) Range(fn func(k StateTuple, eventID string) bool) {
	for k, id := range m {
		if !fn(k, id) {
			return
		}
	}
}

var (
	_ StateLookup = StateMap(nil)
	_ StateLookup = (*unconflictedView)(nil)
)

// SplitStates is a set of states to resolve, already divided as the spec's
// "Unconflicted state map and conflicted state set" definition divides
// them: a key every state holds with the same event is unconflicted, any
// other key is conflicted. An engine whose states share structure
// (snapshots that differ by deltas) can build it at the cost of the
// differences, which makes the whole resolution independent of the size of
// the room.
type SplitStates struct {
	// Unconflicted is the unconflicted state map.
	Unconflicted StateLookup
	// Conflicted holds, for each input state, its entries for the
	// conflicted keys (a key the state lacks is absent). Every key of
	// every map here must be conflicted.
	Conflicted []StateMap
}

// SplitStateMaps divides full state maps into SplitStates, reading every
// key of every state once.
func SplitStateMaps(states []StateMap) SplitStates {
	if len(states) == 0 {
		return SplitStates{Unconflicted: StateMap{}}
	}
	conflicted := make(map[StateTuple]struct{})
	first := states[0]
	for k, id := range first {
		for _, s := range states[1:] {
			if other, ok := s[k]; !ok || other != id {
				conflicted[k] = struct{}{}
				break
			}
		}
	}
	for _, s := range states[1:] {
		for k := range s {
			if _, ok := first[k]; !ok {
				conflicted[k] = struct{}{}
			}
		}
	}
	split := SplitStates{
		Unconflicted: &unconflictedView{base: first, conflicted: conflicted},
		Conflicted:   make([]StateMap, len(states)),
	}
	for i, s := range states {
		part := make(StateMap)
		for k := range conflicted {
			if id, ok := s[k]; ok {
				part[k] = id
			}
		}
		split.Conflicted[i] = part
	}
	return split
}

// unconflictedView is the unconflicted state map as a view of the first
// state without its conflicted keys.
type unconflictedView struct {
	base       StateMap
	conflicted map[StateTuple]struct{}
}

func (u *unconflictedView) Get(k StateTuple) (string, bool) {
	if _, c := u.conflicted[k]; c {
		return "", false
	}
	id, ok := u.base[k]
	return id, ok
}

func (u *unconflictedView) Len() int {
	n := len(u.base)
	for k := range u.conflicted {
		if _, ok := u.base[k]; ok {
			n--
		}
	}
	return n
}

func (u *unconflictedView) Range(fn func(k StateTuple, eventID string) bool) {
	for k, id := range u.base {
		if _, c := u.conflicted[k]; c {
			continue
		}
		if !fn(k, id) {
			return
		}
	}
}

// ResolveSplit resolves states given as SplitStates and returns the
// resolved entries that are not in the unconflicted state map: the
// resolved state is the unconflicted state map plus the returned map (src
// and cache as for ResolveState). A conflicted key missing from the result
// has no event in the resolved state. The work grows with the conflicted
// part only, when src implements AuthChildrenSource.
func ResolveSplit(v Version, states SplitStates, src EventSource, cache *AuthChainCache) (StateMap, error) {
	if _, err := stateResAlgorithm(v); err != nil {
		return nil, err
	}
	if len(states.Conflicted) == 0 || states.Unconflicted == nil {
		return nil, errors.New("state resolution: no states, or no unconflicted state map")
	}
	if cache == nil {
		cache = NewAuthChainCache()
	}
	r := &resolution{
		v:       v,
		src:     src,
		cache:   cache,
		unconf:  states.Unconflicted,
		sets:    states.Conflicted,
		events:  make(map[string]*Event),
		overlay: make(StateMap),
	}
	r.chainSrc, _ = src.(AuthChainSource)
	r.kids, _ = src.(AuthChildrenSource)
	r.rejected, _ = src.(RejectedSource)
	if err := r.split(); err != nil {
		return nil, fmt.Errorf("state resolution: %w", err)
	}
	if err := r.run(); err != nil {
		return nil, fmt.Errorf("state resolution: %w", err)
	}
	return r.result(), nil
}

// resolution holds the working data of one ResolveSplit call.
type resolution struct {
	v        Version
	src      EventSource
	cache    *AuthChainCache
	chainSrc AuthChainSource
	kids     AuthChildrenSource
	rejected RejectedSource

	// unconf is the unconflicted state map; sets[i] holds state i's entries
	// for the conflicted keys, conflictedKeys all of those keys.
	unconf         StateLookup
	sets           []StateMap
	conflictedKeys map[StateTuple]struct{}
	// conflicted is the conflicted state set, perSet[i] its part in state i.
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

// run is the spec's algorithm, steps 1 to 4, on a split resolution.
func (r *resolution) run() error {
	full, err := r.fullConflictedSet()
	if err != nil {
		return err
	}
	// Step 1: "Select the set X of all power events that appear in the full
	// conflicted set. For each such power event P, enlarge X by adding the
	// events in the auth chain of P which also belong to the full conflicted
	// set. Sort X into a list using the reverse topological power ordering."
	// That is the version 12 wording; room version 2's text reads "the
	// union of their auth chains", but it means the same restriction: the
	// unrestricted reading replays the whole power history and fails the
	// MSC4297 v2.0 vectors.
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

// result is step 5, "Update the result by replacing any event with the
// event with the same key from the unconflicted state map, if such an event
// exists, to get the final resolved state": what the iterative auth checks
// wrote, without the keys the unconflicted state map holds.
func (r *resolution) result() StateMap {
	out := make(StateMap, len(r.overlay))
	for k, id := range r.overlay {
		if _, unconflicted := r.unconflicted(k); !unconflicted {
			out[k] = id
		}
	}
	return out
}

// split checks the conflicted part of the states and lists the conflicted
// state set (spec "Unconflicted state map and conflicted state set").
func (r *resolution) split() error {
	r.conflictedKeys = make(map[StateTuple]struct{})
	for _, s := range r.sets {
		for k := range s {
			r.conflictedKeys[k] = struct{}{}
		}
	}
	seen := make(map[string]bool)
	r.perSet = make([][]string, len(r.sets))
	for k := range r.conflictedKeys {
		if id, ok := r.unconf.Get(k); ok {
			return fmt.Errorf("(%q, %q) is given as both unconflicted (%s) and conflicted", k.Type, k.StateKey, id)
		}
		agreed := true
		first, firstOK := r.sets[0][k]
		for i, s := range r.sets {
			id, ok := s[k]
			if ok != firstOK || id != first {
				agreed = false
			}
			if !ok {
				continue
			}
			r.perSet[i] = append(r.perSet[i], id)
			if !seen[id] {
				seen[id] = true
				r.conflicted = append(r.conflicted, id)
			}
		}
		if agreed {
			return fmt.Errorf("(%q, %q) is given as conflicted but every state holds %s", k.Type, k.StateKey, first)
		}
	}
	return nil
}

// unconflicted returns the unconflicted state map's event for k.
func (r *resolution) unconflicted(k StateTuple) (string, bool) {
	if _, c := r.conflictedKeys[k]; c {
		return "", false
	}
	return r.unconf.Get(k)
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
	return r.cache.AuthChain(resolutionEvents{r}, id)
}

// resolutionEvents serves events through the resolution's own memo, so a
// chain walk does not ask the source again for events already read.
type resolutionEvents struct{ r *resolution }

func (e resolutionEvents) Event(id string) (*Event, error) { return e.r.event(id) }

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
