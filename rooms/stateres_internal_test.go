package rooms

import (
	"errors"
	"fmt"
	"math/rand"
	"testing"
)

func TestResolveState_Errors(t *testing.T) {
	v := mustVersion(t, "10")
	r, base := newSRRoom(t, v, true, "@alice:a.example", nil)
	a, b := base.fork(), base.fork()
	r.join(a, "@bob:b.example")
	r.join(b, "@charlie:c.example")
	t.Run("MissingEvent", func(t *testing.T) {
		s := b.state
		s2 := StateMap{srMemberKey("@dave:d.example"): "$not-there"}
		for k, id := range s {
			s2[k] = id
		}
		_, err := ResolveState(v, []StateMap{a.state, s2}, r.set, nil)
		if !errors.Is(err, ErrEventNotFound) {
			t.Fatalf("err = %v, want ErrEventNotFound", err)
		}
	})
	t.Run("WrongKey", func(t *testing.T) {
		s2 := StateMap{}
		for k, id := range b.state {
			s2[k] = id
		}
		s2[srMemberKey("@dave:d.example")] = b.state[srMemberKey("@charlie:c.example")]
		if _, err := ResolveState(v, []StateMap{a.state, s2}, r.set, nil); err == nil {
			t.Fatal("a state entry naming an event of another key was accepted")
		}
	})
	t.Run("UnknownAlgorithm", func(t *testing.T) {
		bad := v
		bad.StateRes = 0
		if _, err := ResolveState(bad, []StateMap{a.state, b.state}, r.set, nil); err == nil {
			t.Fatal("a version without a state resolution algorithm was accepted")
		}
	})
	t.Run("Cycle", func(t *testing.T) {
		x := srEvent(t, v, "$x", "m.room.power_levels", StringPtr(""), "@alice:a.example", map[string]any{}, []string{"$y"}, 1)
		y := srEvent(t, v, "$y", "m.room.join_rules", StringPtr(""), "@alice:a.example", map[string]any{"join_rule": "public"}, []string{"$x"}, 1)
		src := NewEventSet(x, y)
		_, err := ResolveState(v, []StateMap{{StateTuple{"m.room.power_levels", ""}: "$x"}, {StateTuple{"m.room.join_rules", ""}: "$y"}}, src, nil)
		if !errors.Is(err, ErrAuthCycle) {
			t.Fatalf("err = %v, want ErrAuthCycle", err)
		}
	})
}

func srMemberKey(user string) StateTuple { return StateTuple{"m.room.member", user} }

// join joins user on b (the room's join rule must let them).
func (r *srRoom) join(b *srBranch, user string) *Event {
	r.tb.Helper()
	return r.mustSend(b, "m.room.member", StringPtr(user), user, map[string]any{"membership": "join"})
}

// rejectedSet marks some events of an EventSet as rejected on receipt.
type rejectedSet struct {
	*EventSet
	rejected map[string]bool
}

func (s rejectedSet) Rejected(id string) bool { return s.rejected[id] }

var _ RejectedSource = rejectedSet{}

// Iterative auth checks never use a rejected event as an auth event, from
// the event's auth_events or from the working state.
func TestResolveState_RejectedAuthEvents(t *testing.T) {
	for _, vid := range []string{"10", "12"} {
		v := mustVersion(t, vid)
		r, base := newSRRoom(t, v, true, "@alice:a.example", srPowerLevels(v, "@alice:a.example", nil))
		r.join(base, "@bob:b.example")
		a, b := base.fork(), base.fork()
		promote := r.mustSend(a, "m.room.power_levels", StringPtr(""), "@alice:a.example", r.powerLevels(a, "@bob:b.example", 50))
		topic := r.mustSend(a, "m.room.topic", StringPtr(""), "@bob:b.example", map[string]any{"topic": "bob's"})
		r.topic(b, "@alice:a.example", "alice's")
		states := []StateMap{a.state, b.state}
		key := StateTuple{"m.room.topic", ""}
		got, err := ResolveState(v, states, r.set, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got[key] != topic.EventID() {
			t.Fatalf("v%s: topic %s, want Bob's %s", vid, got[key], topic.EventID())
		}
		got, err = ResolveState(v, states, rejectedSet{r.set, map[string]bool{promote.EventID(): true}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got[key] == topic.EventID() {
			t.Fatalf("v%s: Bob's topic was authorised by a rejected power-levels event", vid)
		}
	}
}

func (r *srRoom) topic(b *srBranch, sender, text string) *Event {
	r.tb.Helper()
	return r.mustSend(b, "m.room.topic", StringPtr(""), sender, map[string]any{"topic": text})
}

// countingSource counts the events resolution asks for.
type countingSource struct {
	*EventSet
	asked map[string]int
}

func (c *countingSource) Event(id string) (*Event, error) {
	c.asked[id]++
	return c.EventSet.Event(id)
}

// noRange is an unconflicted state map that fails the test if resolution
// iterates it.
type noRange struct {
	StateLookup
	t *testing.T
}

func (n noRange) Range(func(StateTuple, string) bool) {
	n.t.Error("resolution iterated the unconflicted state map")
}

// With a reverse auth index, resolution reads a number of events bounded
// by the conflicted part, whatever the size of the room, and never
// iterates the unconflicted state map.
func TestResolveSplit_WorkBoundedByConflictedPart(t *testing.T) {
	for _, vid := range []string{"10", "12"} {
		v := mustVersion(t, vid)
		for _, members := range []int{300, 3000} {
			r, states := srForkedRoom(t, v, members, 10, 7)
			split := SplitStateMaps(states)
			split.Unconflicted = noRange{split.Unconflicted, t}
			src := &countingSource{EventSet: r.set, asked: map[string]int{}}
			resolved, err := ResolveSplit(v, split, src, nil)
			if err != nil {
				t.Fatal(err)
			}
			full, err := ResolveState(v, states, r.set, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, id := range resolved {
				if full[k] != id {
					t.Errorf("v%s: split result (%s, %s) = %s, full result %s", vid, k.Type, k.StateKey, id, full[k])
				}
			}
			t.Logf("v%s, %d members: %d events read", vid, members, len(src.asked))
			if len(src.asked) > 200 {
				t.Errorf("v%s, %d members: resolution read %d distinct events for 20 forked events", vid, members, len(src.asked))
			}
			for id, n := range src.asked {
				if n > 1 {
					t.Errorf("v%s: event %s read %d times", vid, id, n)
				}
			}
		}
	}
}

func TestResolveSplit_BadSplit(t *testing.T) {
	v := mustVersion(t, "10")
	r, base := newSRRoom(t, v, true, "@alice:a.example", nil)
	a, b := base.fork(), base.fork()
	r.join(a, "@bob:b.example")
	r.join(b, "@carol:c.example")
	split := SplitStateMaps([]StateMap{a.state, b.state})
	plKey := StateTuple{"m.room.power_levels", ""}
	pl := base.state[plKey]
	for name, bad := range map[string]SplitStates{
		"BothSides":     {Unconflicted: split.Unconflicted, Conflicted: []StateMap{{plKey: pl}, {}}},
		"NotConflicted": {Unconflicted: StateMap{}, Conflicted: []StateMap{{plKey: pl}, {plKey: pl}}},
		"NoStates":      {Unconflicted: StateMap{}},
	} {
		if _, err := ResolveSplit(v, bad, r.set, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Malformed DAGs (cycles, self-references, missing and non-state auth
// events, odd power levels, events of other rooms) give an error or a
// state drawn from the input, never a panic.
func TestResolveState_MalformedDAGs(t *testing.T) {
	types := []string{"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.member", "m.room.topic", "m.room.message"}
	users := []string{"@a:x", "@b:y", "@c:z"}
	for _, vid := range []string{"10", "12"} {
		v := mustVersion(t, vid)
		resolved, failed := 0, 0
		for seed := int64(1); seed <= 200; seed++ {
			rng := rand.New(rand.NewSource(seed))
			n := 3 + rng.Intn(12)
			ids := make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprintf("$e%d", i)
			}
			ids[0] = "$create" // the create event version 12 room IDs imply
			set := NewEventSet()
			var events []*Event
			for i, id := range ids {
				typ := types[rng.Intn(len(types))]
				if i == 0 {
					typ = "m.room.create"
				}
				var sk *string
				if typ != "m.room.message" || rng.Intn(4) == 0 {
					k := ""
					if typ == "m.room.member" {
						k = users[rng.Intn(len(users))]
					}
					sk = &k
				}
				var auth []string
				for j := rng.Intn(4); j > 0; j-- {
					switch r := rng.Intn(40); {
					case r == 0:
						auth = append(auth, "$missing")
					case r == 1:
						auth = append(auth, id) // itself
					case r == 2 || i == 0:
						auth = append(auth, ids[rng.Intn(n)]) // maybe a cycle
					default:
						auth = append(auth, ids[rng.Intn(i)])
					}
				}
				content := map[string]any{
					"membership": []string{"join", "leave", "ban", "invite"}[rng.Intn(4)],
					"join_rule":  "public",
					"users":      map[string]any{users[rng.Intn(3)]: int64(rng.Intn(150))},
				}
				if rng.Intn(5) == 0 {
					content["users"] = "not an object"
				}
				ev := srEvent(t, v, id, typ, sk, users[rng.Intn(3)], content, auth, int64(i%3))
				set.Add(ev)
				events = append(events, ev)
			}
			var states []StateMap
			for s := 0; s < 2+rng.Intn(2); s++ {
				m := StateMap{}
				for _, ev := range events {
					if k, ok := StateTupleOf(ev); ok && rng.Intn(2) == 0 {
						m[k] = ev.EventID()
					}
				}
				states = append(states, m)
			}
			got, err := ResolveState(v, states, set, nil)
			if err != nil {
				failed++
				continue
			}
			resolved++
			for k, id := range got {
				ev, err := set.Event(id)
				if err != nil {
					t.Fatalf("v%s seed %d: resolved (%s, %s) to unknown %s", vid, seed, k.Type, k.StateKey, id)
				}
				if ek, _ := StateTupleOf(ev); ek != k {
					t.Fatalf("v%s seed %d: resolved (%s, %s) to %s of key %v", vid, seed, k.Type, k.StateKey, id, ek)
				}
			}
		}
		t.Logf("v%s: %d resolved, %d refused", vid, resolved, failed)
		if resolved == 0 || failed == 0 {
			t.Errorf("v%s: the generator should produce both resolvable and refused inputs", vid)
		}
	}
}
