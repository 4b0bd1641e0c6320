package rooms

import (
	"errors"
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
