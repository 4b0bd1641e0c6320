package rooms

import (
	"fmt"
	"sort"
)

// fullConflictedSet returns the spec's "full conflicted set": the conflicted
// state set, the auth difference, and in v2.1 the conflicted state
// subgraph. Every event in it is fetched into r.events.
func (r *resolution) fullConflictedSet() (*idSet, error) {
	sort.Strings(r.conflicted)
	full := &idSet{}
	for k := range r.conflictedKeys {
		for i, s := range r.sets {
			id, ok := s[k]
			if !ok {
				continue
			}
			ev, err := r.event(id)
			if err != nil {
				return nil, err
			}
			if got, ok := StateTupleOf(ev); !ok || got != k {
				return nil, fmt.Errorf("state set %d maps (%q, %q) to event %s, which is not a state event of that key", i, k.Type, k.StateKey, id)
			}
		}
	}
	for _, id := range r.conflicted {
		full.add(id)
	}

	// Auth difference: with C_i the full auth chain of state i, it is
	// ∪C_i − ∩C_i. Each C_i is A ∪ D_i, where A is the auth chain of the
	// unconflicted state map (common to every state) and D_i the auth chain
	// of state i's conflicted events, so the difference is
	// ∪D_i − ∩D_i − A: only the chains of conflicted events are walked, and
	// A is consulted for the few events in some D_i but not all.
	type count struct{ sets, last int }
	counts := make(map[string]*count)
	var anc []string
	for i, ids := range r.perSet {
		for _, c := range ids {
			chain, err := r.chain(c)
			if err != nil {
				return nil, err
			}
			for _, a := range chain {
				n := counts[a]
				if n == nil {
					n = &count{}
					counts[a] = n
					anc = append(anc, a)
				}
				if n.last != i+1 {
					n.last = i + 1
					n.sets++
				}
			}
		}
	}
	sort.Strings(anc)
	var maybe []string
	for _, a := range anc {
		if counts[a].sets < len(r.sets) {
			maybe = append(maybe, a)
		}
	}
	inA, err := r.unconflictedChainMembers(maybe)
	if err != nil {
		return nil, err
	}
	for _, a := range maybe {
		if !inA[a] {
			if _, err := r.event(a); err != nil {
				return nil, err
			}
			full.add(a)
		}
	}

	if r.v.StateRes == StateResV21 {
		// MSC4297 modification 2, "Conflicted state subgraph": the events on
		// auth_events paths from one conflicted event to another, endpoints
		// included. The events reachable from conflicted events are anc;
		// keep those that reach a conflicted event in turn.
		conflicted := make(map[string]bool, len(r.conflicted))
		for _, c := range r.conflicted {
			conflicted[c] = true
		}
		reaches := make(map[string]int8) // 0 unknown, 1 visiting, 2 no, 3 yes
		for _, a := range anc {
			yes, err := r.reachesConflicted(a, conflicted, reaches)
			if err != nil {
				return nil, err
			}
			if yes {
				full.add(a)
			}
		}
	}
	return full, nil
}

// reachesConflicted reports whether a conflicted event is in id's auth
// chain.
func (r *resolution) reachesConflicted(id string, conflicted map[string]bool, memo map[string]int8) (bool, error) {
	switch memo[id] {
	case 1:
		return false, fmt.Errorf("%w: through %s", ErrAuthCycle, id)
	case 2:
		return false, nil
	case 3:
		return true, nil
	}
	memo[id] = 1
	ev, err := r.event(id)
	if err != nil {
		return false, err
	}
	found := false
	for _, p := range authParents(ev) {
		yes := conflicted[p]
		if !yes {
			if yes, err = r.reachesConflicted(p, conflicted, memo); err != nil {
				return false, err
			}
		}
		if yes {
			found = true
			break
		}
	}
	memo[id] = 2
	if found {
		memo[id] = 3
	}
	return found, nil
}

// unconflictedChainMembers reports which of ids are in the auth chain of
// some event of the unconflicted state map.
//
// With an AuthChildrenSource it searches forward from each candidate for an
// unconflicted descendant, stopping at the first; a candidate outside that
// chain has only descendants outside it, which are the conflicted part and
// events no state holds. Without one it walks the auth chains of the whole
// unconflicted state map.
func (r *resolution) unconflictedChainMembers(ids []string) (map[string]bool, error) {
	out := make(map[string]bool, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	if r.kids == nil {
		return r.unconflictedChainByWalk(ids)
	}
	r.inUnconflictedChain = make(map[string]bool)
	for _, id := range ids {
		yes, err := r.searchUnconflictedDescendant(id)
		if err != nil {
			return nil, err
		}
		out[id] = yes
	}
	return out, nil
}

// searchUnconflictedDescendant runs a breadth-first search over the events
// that cite x, directly or not, for one in the unconflicted state map.
func (r *resolution) searchUnconflictedDescendant(x string) (bool, error) {
	if known, ok := r.inUnconflictedChain[x]; ok {
		return known, nil
	}
	ev, err := r.event(x)
	if err != nil {
		return false, err
	}
	if ev.Type() == typeCreate && !ev.Version().CreateInAuthEvents {
		// The create event implied by the room ID is in the auth chain of
		// every other event, so of every unconflicted one but itself.
		yes := r.hasUnconflictedOtherThan(CreateTuple)
		r.inUnconflictedChain[x] = yes
		return yes, nil
	}
	visited := map[string]bool{x: true}
	queue := []string{x}
	found := false
	var walkErr error
	for len(queue) > 0 && !found && walkErr == nil {
		y := queue[0]
		queue = queue[1:]
		err := r.kids.AuthChildren(y, func(c string) bool {
			if visited[c] {
				return true
			}
			visited[c] = true
			child, err := r.event(c)
			if err != nil {
				walkErr = err
				return false
			}
			if r.isUnconflicted(child) {
				found = true
				return false
			}
			if known, ok := r.inUnconflictedChain[c]; ok {
				if known {
					found = true
					return false
				}
				return true // its descendants were searched in vain already
			}
			queue = append(queue, c)
			return true
		})
		if err != nil {
			return false, fmt.Errorf("auth children of %s: %w", y, err)
		}
	}
	if walkErr != nil {
		return false, walkErr
	}
	if found {
		r.inUnconflictedChain[x] = true
		return true, nil
	}
	// No event below x is unconflicted, so none of them is in the chain
	// (the memo records "has no unconflicted descendant"; whether an
	// event is itself unconflicted is checked wherever it is met).
	for id := range visited {
		r.inUnconflictedChain[id] = false
	}
	return false, nil
}

// hasUnconflictedOtherThan reports whether the unconflicted state map holds
// a key other than k.
func (r *resolution) hasUnconflictedOtherThan(k StateTuple) bool {
	n := r.unconf.Len()
	if _, ok := r.unconf.Get(k); ok {
		n--
	}
	return n > 0
}

// unconflictedChainByWalk walks the auth chain of every unconflicted event
// (the fallback for sources without reverse edges) and reports which of
// ids it met.
func (r *resolution) unconflictedChainByWalk(ids []string) (map[string]bool, error) {
	seen := make(map[string]bool)
	var stack []string
	var walkErr error
	r.unconf.Range(func(_ StateTuple, id string) bool {
		ev, err := fetchEvent(r.src, id)
		if err != nil {
			walkErr = err
			return false
		}
		stack = append(stack, authParents(ev)...)
		for len(stack) > 0 {
			a := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[a] {
				continue
			}
			seen[a] = true
			aev, err := fetchEvent(r.src, a)
			if err != nil {
				walkErr = err
				return false
			}
			stack = append(stack, authParents(aev)...)
		}
		return true
	})
	if walkErr != nil {
		return nil, walkErr
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = seen[id]
	}
	return out, nil
}
