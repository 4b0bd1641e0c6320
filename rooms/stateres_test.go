package rooms

import (
	"errors"
	"testing"
)

const (
	srAlice   = "@alice:a.example"
	srBob     = "@bob:b.example"
	srCharlie = "@charlie:c.example"
	srDave    = "@dave:d.example"
	srEve     = "@eve:e.example"
	srZara    = "@zara:z.example"
)

var (
	srPLKey    = StateTuple{"m.room.power_levels", ""}
	srJRKey    = StateTuple{"m.room.join_rules", ""}
	srTopicKey = StateTuple{"m.room.topic", ""}
)

func srMember(user string) StateTuple { return StateTuple{"m.room.member", user} }

// srJoin joins user on b (the room's join rule must let them).
func (r *srRoom) join(b *srBranch, user string) *Event {
	r.tb.Helper()
	return r.mustSend(b, "m.room.member", StringPtr(user), user, map[string]any{"membership": "join"})
}

func (r *srRoom) topic(b *srBranch, sender, text string) *Event {
	r.tb.Helper()
	return r.mustSend(b, "m.room.topic", StringPtr(""), sender, map[string]any{"topic": text})
}

// resolve resolves states with the room's version and events.
func (r *srRoom) resolve(states ...StateMap) StateMap {
	r.tb.Helper()
	got, err := ResolveState(r.v, states, r.set, nil)
	if err != nil {
		r.tb.Fatalf("resolve: %v", err)
	}
	return got
}

// expectState checks the resolved entries of want ("" = key absent).
func expectState(t *testing.T, got StateMap, want map[StateTuple]string) {
	t.Helper()
	for k, id := range want {
		if have, ok := got[k]; id == "" && ok {
			t.Errorf("(%s, %s) = %s, want no entry", k.Type, k.StateKey, have)
		} else if have != id {
			t.Errorf("(%s, %s) = %q, want %q", k.Type, k.StateKey, have, id)
		}
	}
}

// forEachVersion runs a scenario whose outcome both algorithms share under
// room versions 10 (v2.0) and 12 (v2.1).
func forEachVersion(t *testing.T, run func(t *testing.T, v Version)) {
	for _, id := range []string{"10", "12"} {
		t.Run("v"+id, func(t *testing.T) { run(t, mustVersion(t, id)) })
	}
}

// modPowerLevels gives bob moderator (50) and lets level 50 send power
// levels, so a moderator can change them within their own level.
func modPowerLevels(v Version) map[string]any {
	pl := srPowerLevels(v, srAlice, map[string]int64{srBob: 50})
	pl["events"] = map[string]any{"m.room.power_levels": int64(50)}
	return pl
}

// Alice bans Bob while Bob, concurrently, changes the power levels: the
// ban sorts first (higher power) and Bob's change fails against it.
func TestResolveState_BanVsPowerLevels(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v Version) {
		r, base := newSRRoom(t, v, true, srAlice, modPowerLevels(v))
		r.join(base, srBob)
		r.join(base, srCharlie)
		pl0 := base.state[srPLKey]
		a, b := base.fork(), base.fork()
		ban := r.mustSend(a, "m.room.member", StringPtr(srBob), srAlice, map[string]any{"membership": "ban"})
		bobPL := r.mustSend(b, "m.room.power_levels", StringPtr(""), srBob, r.powerLevels(b, srCharlie, 50))
		for _, order := range [][]StateMap{{a.state, b.state}, {b.state, a.state}} {
			got := r.resolve(order...)
			expectState(t, got, map[StateTuple]string{srMember(srBob): ban.EventID(), srPLKey: pl0})
			if got[srPLKey] == bobPL.EventID() {
				t.Error("the banned moderator's power levels won")
			}
		}
	})
}

// Bob, a moderator, sets the topic while Alice bans him: Bob's topic is
// checked after the ban (mainline order puts the topic based on the older
// power levels first) and the topic resets to Alice's.
func TestResolveState_TopicReset(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v Version) {
		r, base := newSRRoom(t, v, true, srAlice, srPowerLevels(v, srAlice, nil))
		r.join(base, srBob)
		t1 := r.topic(base, srAlice, "alice's topic")
		pa := r.mustSend(base, "m.room.power_levels", StringPtr(""), srAlice, r.powerLevels(base, srBob, 50))
		a, b := base.fork(), base.fork()
		t2 := r.topic(b, srBob, "bob's topic")
		ban := r.mustSend(a, "m.room.member", StringPtr(srBob), srAlice, map[string]any{"membership": "ban"})
		got := r.resolve(a.state, b.state)
		expectState(t, got, map[StateTuple]string{srTopicKey: t1.EventID(), srMember(srBob): ban.EventID(), srPLKey: pa.EventID()})
		if got[srTopicKey] == t2.EventID() {
			t.Error("the banned user's topic survived")
		}
	})
}

// Eve joins a public room while Alice, concurrently, makes it invite-only:
// the join rules are applied first and Eve's join fails against them.
func TestResolveState_JoinRuleEvasion(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v Version) {
		r, base := newSRRoom(t, v, true, srAlice, srPowerLevels(v, srAlice, nil))
		r.join(base, srBob)
		a, b := base.fork(), base.fork()
		jr := r.mustSend(a, "m.room.join_rules", StringPtr(""), srAlice, map[string]any{"join_rule": "invite"})
		r.join(b, srEve)
		got := r.resolve(a.state, b.state)
		expectState(t, got, map[StateTuple]string{srJRKey: jr.EventID(), srMember(srEve): ""})
	})
}

// One side promotes and demotes along a chain of power-levels events that
// each depend on the previous one; the other side still has the first.
// The chain is replayed in auth order and its last event wins.
func TestResolveState_OffTopicPowerLevels(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v Version) {
		r, base := newSRRoom(t, v, true, srAlice, modPowerLevels(v))
		r.join(base, srBob)
		r.join(base, srCharlie)
		a, b := base.fork(), base.fork()
		r.topic(a, srAlice, "unrelated")
		r.mustSend(b, "m.room.power_levels", StringPtr(""), srBob, r.powerLevels(b, srCharlie, 50))
		pc := r.mustSend(b, "m.room.power_levels", StringPtr(""), srCharlie, r.powerLevels(b, srCharlie, 0))
		got := r.resolve(a.state, b.state)
		expectState(t, got, map[StateTuple]string{srPLKey: pc.EventID()})
	})
}

// Two users join on two servers at once: both joins stand.
func TestResolveState_ConcurrentJoins(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v Version) {
		r, base := newSRRoom(t, v, true, srAlice, srPowerLevels(v, srAlice, nil))
		a, b := base.fork(), base.fork()
		jc := r.join(a, srCharlie)
		jd := r.join(b, srDave)
		got := r.resolve(a.state, b.state)
		expectState(t, got, map[StateTuple]string{srMember(srCharlie): jc.EventID(), srMember(srDave): jd.EventID()})
		if len(got) != len(base.state)+2 {
			t.Errorf("resolved %d entries, want %d", len(got), len(base.state)+2)
		}
	})
}

// Mainline ordering: Alice demotes Bob while Bob, concurrently, changes
// the power levels and Alice then sets a topic on each side. Bob's change
// fails; the topic based on the newer mainline power levels wins although
// the other topic is later by origin_server_ts.
func TestResolveState_MainlineSort(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v Version) {
		r, base := newSRRoom(t, v, true, srAlice, modPowerLevels(v))
		r.join(base, srBob)
		r.topic(base, srAlice, "t1")
		r.mustSend(base, "m.room.power_levels", StringPtr(""), srAlice, r.powerLevels(base, srCharlie, 10))
		r.topic(base, srAlice, "t2")
		a, b := base.fork(), base.fork()
		pa2 := r.mustSend(a, "m.room.power_levels", StringPtr(""), srAlice, r.powerLevels(a, srBob, 0))
		t3 := r.topic(a, srAlice, "t3")
		pb := r.mustSend(b, "m.room.power_levels", StringPtr(""), srBob, r.powerLevels(b, srDave, 20))
		t4 := r.topic(b, srAlice, "t4")
		if t4.OriginServerTS() <= t3.OriginServerTS() {
			t.Fatal("scenario needs t4 to be later than t3")
		}
		got := r.resolve(a.state, b.state)
		expectState(t, got, map[StateTuple]string{srPLKey: pa2.EventID(), srTopicKey: t3.EventID()})
		if got[srPLKey] == pb.EventID() {
			t.Error("the demoted moderator's power levels won")
		}
	})
}

// msc4297ProblemA builds MSC4297's problem A: one state set holds outdated
// join rules while both agree that Alice, who set them, has left.
func msc4297ProblemA(t *testing.T, v Version) (*srRoom, []StateMap, *Event) {
	r, b := newSRRoom(t, v, true, srAlice, srPowerLevels(v, srAlice, nil))
	create, pl, jr := b.state[CreateTuple], b.state[srPLKey], b.state[srJRKey]
	bob := r.join(b, srBob)
	charlie := r.join(b, srCharlie)
	jr2 := r.mustSend(b, "m.room.join_rules", StringPtr(""), srAlice, map[string]any{"join_rule": "invite"})
	leave := r.mustSend(b, "m.room.member", StringPtr(srAlice), srAlice, map[string]any{"membership": "leave"})
	bob2 := r.mustSend(b, "m.room.member", StringPtr(srBob), srBob, map[string]any{"membership": "join", "displayname": "bob++"})
	charlie2 := r.mustSend(b, "m.room.member", StringPtr(srCharlie), srCharlie, map[string]any{"membership": "join", "displayname": "charlie++"})
	s1 := StateMap{CreateTuple: create, srPLKey: pl, srMember(srCharlie): charlie.EventID(), srJRKey: jr2.EventID(), srMember(srAlice): leave.EventID(), srMember(srBob): bob2.EventID()}
	s2 := StateMap{CreateTuple: create, srPLKey: pl, srJRKey: jr, srMember(srBob): bob.EventID(), srMember(srAlice): leave.EventID(), srMember(srCharlie): charlie2.EventID()}
	return r, []StateMap{s1, s2}, jr2
}

// MSC4297 problem A: v2.0 replays the join rules on top of the
// unconflicted state, where Alice has left, so both fail and the room loses
// its join rules; v2.1 replays them from an empty state and keeps Alice's
// latest join rules.
func TestResolveState_MSC4297ProblemA(t *testing.T) {
	t.Run("v10", func(t *testing.T) {
		r, sets, _ := msc4297ProblemA(t, mustVersion(t, "10"))
		expectState(t, r.resolve(sets...), map[StateTuple]string{srJRKey: ""})
	})
	t.Run("v12", func(t *testing.T) {
		r, sets, jr2 := msc4297ProblemA(t, mustVersion(t, "12"))
		expectState(t, r.resolve(sets...), map[StateTuple]string{srJRKey: jr2.EventID()})
	})
}

// msc4297ProblemB builds MSC4297's problem B: Alice promotes Bob, Bob
// promotes Charlie; one state set holds the power levels before both, the
// other Bob's, and both have seen Alice's in their auth chains.
func msc4297ProblemB(t *testing.T, v Version) (*srRoom, []StateMap, string, *Event) {
	pl := srPowerLevels(v, srAlice, nil)
	pl["events"] = map[string]any{"m.room.power_levels": int64(50)}
	r, b := newSRRoom(t, v, true, srAlice, pl)
	create, pl0, jr, alice := b.state[CreateTuple], b.state[srPLKey], b.state[srJRKey], b.state[srMember(srAlice)]
	bob := r.join(b, srBob)
	charlie := r.join(b, srCharlie)
	r.mustSend(b, "m.room.power_levels", StringPtr(""), srAlice, r.powerLevels(b, srBob, 50))
	pl2 := r.mustSend(b, "m.room.power_levels", StringPtr(""), srBob, r.powerLevels(b, srCharlie, 50))
	zara := r.join(b, srZara)
	eveBranch := b.fork()
	r.join(eveBranch, srEve)
	eve2 := r.mustSend(eveBranch, "m.room.member", StringPtr(srEve), srEve, map[string]any{"membership": "join", "displayname": "eve++"})
	s1 := StateMap{CreateTuple: create, srMember(srAlice): alice, srPLKey: pl0, srJRKey: jr, srMember(srBob): bob.EventID(), srMember(srCharlie): charlie.EventID(), srMember(srEve): eve2.EventID()}
	s2 := StateMap{CreateTuple: create, srMember(srAlice): alice, srJRKey: jr, srMember(srBob): bob.EventID(), srMember(srCharlie): charlie.EventID(), srPLKey: pl2.EventID(), srMember(srZara): zara.EventID()}
	return r, []StateMap{s1, s2}, pl0, pl2
}

// MSC4297 problem B: the auth difference misses Alice's promotion of Bob,
// so v2.0 cannot authorise Bob's promotion of Charlie and resets the power
// levels to the first event; v2.1 adds the conflicted state subgraph and
// keeps Bob's.
func TestResolveState_MSC4297ProblemB(t *testing.T) {
	t.Run("v10", func(t *testing.T) {
		r, sets, pl0, _ := msc4297ProblemB(t, mustVersion(t, "10"))
		expectState(t, r.resolve(sets...), map[StateTuple]string{srPLKey: pl0})
	})
	t.Run("v12", func(t *testing.T) {
		r, sets, _, pl2 := msc4297ProblemB(t, mustVersion(t, "12"))
		expectState(t, r.resolve(sets...), map[StateTuple]string{srPLKey: pl2.EventID()})
	})
}

func TestResolveState_Trivial(t *testing.T) {
	forEachVersion(t, func(t *testing.T, v Version) {
		r, base := newSRRoom(t, v, true, srAlice, nil)
		r.join(base, srBob)
		if got := r.resolve(); len(got) != 0 {
			t.Errorf("no states resolved to %v", got)
		}
		one := r.resolve(base.state)
		two := r.resolve(base.state, base.state)
		for _, got := range []StateMap{one, two} {
			if len(got) != len(base.state) {
				t.Fatalf("resolved %d entries, want %d", len(got), len(base.state))
			}
			for k, id := range base.state {
				if got[k] != id {
					t.Errorf("(%s, %s) = %s, want %s", k.Type, k.StateKey, got[k], id)
				}
			}
		}
	})
}

func TestResolveState_Errors(t *testing.T) {
	v := mustVersion(t, "10")
	r, base := newSRRoom(t, v, true, srAlice, nil)
	a, b := base.fork(), base.fork()
	r.join(a, srBob)
	r.join(b, srCharlie)
	t.Run("MissingEvent", func(t *testing.T) {
		s := b.state
		s2 := StateMap{srMember(srDave): "$not-there"}
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
		s2[srMember(srDave)] = b.state[srMember(srCharlie)]
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
		x := srEvent(t, v, "$x", "m.room.power_levels", StringPtr(""), srAlice, map[string]any{}, []string{"$y"}, 1)
		y := srEvent(t, v, "$y", "m.room.join_rules", StringPtr(""), srAlice, map[string]any{"join_rule": "public"}, []string{"$x"}, 1)
		src := NewEventSet(x, y)
		_, err := ResolveState(v, []StateMap{{srPLKey: "$x"}, {srJRKey: "$y"}}, src, nil)
		if !errors.Is(err, ErrAuthCycle) {
			t.Fatalf("err = %v, want ErrAuthCycle", err)
		}
	})
}
