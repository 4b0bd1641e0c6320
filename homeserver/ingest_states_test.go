package homeserver

import (
	"fmt"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// TestRecentStates: states after events are found by ID, the only forward
// extremity's is the current state, an unknown prev event is reported,
// and the memory is bounded.
func TestRecentStates(t *testing.T) {
	cur := rooms.StateMap{{Type: "m.room.create"}: "$create"}
	other := rooms.StateMap{{Type: "m.room.create"}: "$create", {Type: "m.room.member", StateKey: "@b:b.test"}: "$jb"}
	h := &roomHead{extremities: []string{"$x"}, current: cur}
	h.after.put("$a", other)
	got, ok := h.statesAfter([]string{"$a", "$x"})
	if !ok || !sameMap(got[0], other) || !sameMap(got[1], cur) {
		t.Fatalf("statesAfter = %v, %v", got, ok)
	}
	if _, ok := h.statesAfter([]string{"$a", "$unknown"}); ok {
		t.Fatal("an unknown prev event was found")
	}
	for i := range recentStatesKept + 5 {
		h.after.put(fmt.Sprintf("$m%d", i), cur)
	}
	if len(h.after.byID) != recentStatesKept {
		t.Fatalf("%d states kept, want %d", len(h.after.byID), recentStatesKept)
	}
	if _, ok := h.after.byID["$a"]; ok {
		t.Fatal("the oldest state was kept")
	}
	if allSameState([]rooms.StateMap{cur, other}) || !allSameState([]rooms.StateMap{cur, {{Type: "m.room.create"}: "$create"}}) {
		t.Fatal("allSameState compares contents")
	}
}

// TestResolutionMemo: a resolution is found again only for the same input
// maps in the same order, not for equal copies, and its delta is relative
// to the first input.
func TestResolutionMemo(t *testing.T) {
	create := rooms.StateTuple{Type: "m.room.create"}
	pl := rooms.StateTuple{Type: "m.room.power_levels"}
	a := rooms.StateMap{create: "$c", pl: "$pl1"}
	b := rooms.StateMap{create: "$c", pl: "$pl2"}
	resolved := rooms.StateMap{create: "$c", pl: "$pl2"}
	var m resolutionMemo
	m.put(memoEntry{inputs: []rooms.StateMap{a, b}, resolved: resolved, delta: deltaFrom(a, resolved)})
	en, ok := m.get([]rooms.StateMap{a, b})
	if !ok || !sameMap(en.resolved, resolved) || len(en.delta) != 1 || en.delta[store.StateKey(pl)] != "$pl2" {
		t.Fatalf("memo entry %+v, %v", en, ok)
	}
	if _, ok := m.get([]rooms.StateMap{b, a}); ok {
		t.Fatal("found with the inputs in another order (the delta would be wrong)")
	}
	if _, ok := m.get([]rooms.StateMap{{create: "$c", pl: "$pl1"}, b}); ok {
		t.Fatal("found for a copy of an input")
	}
	for range resolutionsKept {
		m.put(memoEntry{inputs: []rooms.StateMap{{}, {}}})
	}
	if _, ok := m.get([]rooms.StateMap{a, b}); ok || len(m.entries) != resolutionsKept {
		t.Fatalf("memo holds %d entries and kept the oldest: %v", len(m.entries), ok)
	}
	d := deltaFrom(rooms.StateMap{create: "$c", pl: "$pl1"}, rooms.StateMap{create: "$c"})
	if len(d) != 1 || d[store.StateKey(pl)] != "" {
		t.Fatalf("a key resolved away: delta %v", d)
	}
}
