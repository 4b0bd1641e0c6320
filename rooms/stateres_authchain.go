package rooms

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// EventSource serves the events state resolution reads: the events of the
// state sets and every event of their auth chains. Resolution asks only for
// the events it needs (the conflicted part, its auth chains, and a few
// auth-relevant events of the unconflicted state), so a store can serve a
// room of any size.
//
// Event returns an error wrapping ErrEventNotFound when it does not hold the
// event; any other error is passed through. The returned event must not be
// modified.
type EventSource interface {
	Event(id string) (*Event, error)
}

// AuthChainSource is an optional capability of an EventSource: a store that
// keeps an auth-chain index returns an event's full auth chain (every event
// reachable through auth_events, the event itself excluded; in room versions
// whose create event is implied by the room ID, the create event is part of
// every other event's chain) without walking it. The slice is read-only.
// Without it, resolution computes chains through an AuthChainCache.
type AuthChainSource interface {
	AuthChain(id string) ([]string, error)
}

// AuthChildrenSource is an optional capability of an EventSource: the
// reverse of the auth_events edges. AuthChildren calls yield with the ID of
// each stored event that lists id in its auth_events (in any order) until
// yield returns false. It must yield every such state event the source
// holds (at least every event of the states being resolved and of their
// auth chains); non-state events may be left out. Room version 12's implied
// create edge is not expected.
//
// With it, the auth difference is computed without walking the auth chains
// of the unconflicted state: for an event in the auth chain of some states'
// conflicted events but not of others', resolution searches the events that
// cite it for an unconflicted one, and stops at the first. The work grows
// with the conflicted part of the state, not with the size of the room.
type AuthChildrenSource interface {
	AuthChildren(id string, yield func(child string) bool) error
}

// RejectedSource is an optional capability of an EventSource: it reports
// events that were rejected on receipt. Iterative auth checks never use a
// rejected event as an auth event (spec: "if the auth event is not
// rejected").
type RejectedSource interface {
	Rejected(id string) bool
}

// ErrEventNotFound is matched by errors for events an EventSource does not
// hold.
var ErrEventNotFound = errors.New("event not found")

// ErrAuthCycle is matched by errors for auth_events graphs that are not
// acyclic (only malformed or malicious input has them).
var ErrAuthCycle = errors.New("auth events form a cycle")

// EventSet is an in-memory EventSource over a fixed set of events, with the
// reverse auth index: for tests, `ferry inspect resolve` and events not yet
// persisted. It is not safe for concurrent modification; concurrent reads
// are fine.
type EventSet struct {
	byID     map[string]*Event
	children map[string][]string
}

// NewEventSet returns an EventSet holding events.
func NewEventSet(events ...*Event) *EventSet {
	s := &EventSet{
		byID:     make(map[string]*Event, len(events)),
		children: make(map[string][]string),
	}
	for _, ev := range events {
		s.Add(ev)
	}
	return s
}

// Add stores ev; a second event with the same ID is ignored.
func (s *EventSet) Add(ev *Event) {
	if _, dup := s.byID[ev.EventID()]; dup {
		return
	}
	s.byID[ev.EventID()] = ev
	if !ev.IsState() {
		return
	}
	for _, a := range uniqueIDs(ev.AuthEvents()) {
		s.children[a] = append(s.children[a], ev.EventID())
	}
}

// Len returns the number of events held.
func (s *EventSet) Len() int { return len(s.byID) }

// Event implements EventSource.
func (s *EventSet) Event(id string) (*Event, error) {
	ev, ok := s.byID[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrEventNotFound, id)
	}
	return ev, nil
}

// AuthChildren implements AuthChildrenSource.
func (s *EventSet) AuthChildren(id string, yield func(child string) bool) error {
	for _, c := range s.children[id] {
		if !yield(c) {
			return nil
		}
	}
	return nil
}

var (
	_ EventSource        = (*EventSet)(nil)
	_ AuthChildrenSource = (*EventSet)(nil)
)

// uniqueIDs returns ids without repeats, keeping the first occurrence.
func uniqueIDs(ids []string) []string {
	for i := 1; i < len(ids); i++ {
		for j := 0; j < i; j++ {
			if ids[i] == ids[j] {
				return dedupe(ids)
			}
		}
	}
	return ids
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// impliedCreateID returns the ID of the create event that ev's room ID
// implies, or "" when ev's room version lists the create event in
// auth_events instead (or ev is itself a create event). Room version 12
// (MSC4291): "The room_id (being the m.room.create event's ID) implies
// this"; state resolution treats it as an auth event of every other event.
func impliedCreateID(ev *Event) string {
	if ev.Version().CreateInAuthEvents || ev.Type() == "m.room.create" {
		return ""
	}
	rid := ev.RoomID()
	if !strings.HasPrefix(rid, "!") || len(rid) < 2 {
		return ""
	}
	return "$" + rid[1:]
}

// authParents returns the events ev is authorised by, as the auth chain
// definition walks them: auth_events without repeats, plus the implied
// create event where the room version has one.
func authParents(ev *Event) []string {
	parents := uniqueIDs(ev.AuthEvents())
	if c := impliedCreateID(ev); c != "" {
		for _, p := range parents {
			if p == c {
				return parents
			}
		}
		out := make([]string, 0, len(parents)+1)
		out = append(out, parents...)
		return append(out, c)
	}
	return parents
}

// AuthChainCache computes auth chains and remembers them, so the chains of
// events that were already part of a resolution are not walked again. Keep
// one per room (or per server; event IDs are unique) for as long as
// resolutions run; it is safe for concurrent use. Chains are computed from
// the EventSource passed to each call, which must serve the same events for
// the same IDs.
type AuthChainCache struct {
	mu     sync.Mutex
	chains map[string][]string
}

// NewAuthChainCache returns an empty cache.
func NewAuthChainCache() *AuthChainCache {
	return &AuthChainCache{chains: make(map[string][]string)}
}

// Len returns the number of events whose chain is remembered.
func (c *AuthChainCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.chains)
}

// AuthChain returns the auth chain of event id (spec "Auth chain": "all of
// E's auth events, all of their auth events, and so on recursively"),
// sorted, without id itself. Ancestors whose chain is remembered are not
// walked again. The slice is shared and must not be modified.
func (c *AuthChainCache) AuthChain(src EventSource, id string) ([]string, error) {
	c.mu.Lock()
	chain, ok := c.chains[id]
	c.mu.Unlock()
	if ok {
		return chain, nil
	}
	chain, err := c.walk(src, id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.chains[id] = chain
	c.mu.Unlock()
	return chain, nil
}

// walk collects the chain of id by a depth-first walk that stops at
// ancestors whose chain is remembered and takes their chain whole.
func (c *AuthChainCache) walk(src EventSource, root string) ([]string, error) {
	rootEv, err := fetchEvent(src, root)
	if err != nil {
		return nil, err
	}
	type edge struct{ id, citedBy string }
	seen := make(map[string]bool)
	var stack []edge
	for _, p := range authParents(rootEv) {
		stack = append(stack, edge{p, root})
	}
	for len(stack) > 0 {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[e.id] {
			continue
		}
		seen[e.id] = true
		c.mu.Lock()
		known, ok := c.chains[e.id]
		c.mu.Unlock()
		if ok {
			for _, a := range known {
				seen[a] = true
			}
			continue
		}
		ev, err := fetchEvent(src, e.id)
		if err != nil {
			return nil, fmt.Errorf("auth event of %s: %w", e.citedBy, err)
		}
		for _, p := range authParents(ev) {
			if !seen[p] {
				stack = append(stack, edge{p, e.id})
			}
		}
	}
	if seen[root] {
		return nil, fmt.Errorf("%w: through %s", ErrAuthCycle, root)
	}
	out := make([]string, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}

// fetchEvent asks src for id and turns a nil event into ErrEventNotFound.
func fetchEvent(src EventSource, id string) (*Event, error) {
	ev, err := src.Event(id)
	if err != nil {
		if errors.Is(err, ErrEventNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("event %s: %w", id, err)
	}
	if ev == nil {
		return nil, fmt.Errorf("%w: %s", ErrEventNotFound, id)
	}
	return ev, nil
}
