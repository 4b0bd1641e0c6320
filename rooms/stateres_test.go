package rooms_test

import (
	"maps"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
)

// The classic state resolution scenarios, built from real signed events
// with roomstest: two branches fork from a common history and their states
// are resolved.

const (
	srAlice = roomstest.Alice
	srAnn   = roomstest.Ann
	srBob   = roomstest.Bob
	srCarol = roomstest.Carol
	srDave  = roomstest.Dave
	srEve   = roomstest.Eve
)

var (
	srCreateKey = rooms.CreateTuple
	srPlKey     = rooms.StateTuple{Type: "m.room.power_levels"}
	srJrKey     = rooms.StateTuple{Type: "m.room.join_rules"}
	srTopicKey  = rooms.StateTuple{Type: "m.room.topic"}
)

func srMemberKey(user string) rooms.StateTuple {
	return rooms.StateTuple{Type: "m.room.member", StateKey: user}
}

// srSend builds s on r and adds it if the authorization rules allow it
// against r's state; scenarios only build valid histories.
func srSend(t *testing.T, r *roomstest.Room, s roomstest.Spec) *rooms.Event {
	t.Helper()
	ev := r.Build(s)
	if err := rooms.CheckAuth(ev, r.State()); err != nil {
		t.Fatalf("scenario event %s from %s is not allowed: %v", s.Type, s.Sender, err)
	}
	r.Add(ev)
	return ev
}

func srJoin(t *testing.T, r *roomstest.Room, user string) *rooms.Event {
	t.Helper()
	return srSend(t, r, roomstest.Member(user, user, "join"))
}

func srTopic(t *testing.T, r *roomstest.Room, sender, text string) *rooms.Event {
	t.Helper()
	return srSend(t, r, roomstest.State(sender, "m.room.topic", "", map[string]any{"topic": text}))
}

// srWithUser returns r's power-levels content with users[user] = level.
func srWithUser(r *roomstest.Room, user string, level int64) map[string]any {
	content := r.PowerLevelsContent()
	users, _ := content["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
		content["users"] = users
	}
	users[user] = level
	return content
}

// srPowerLevels is a power-levels content with schema defaults, users at
// the given levels, Alice at 100 where creators are not privileged, and
// power-levels changes open to level 50 (so a moderator can make them
// within their own level).
func srPowerLevels(v rooms.Version, users map[string]int64) map[string]any {
	u := map[string]any{}
	if v.Creators != rooms.CreatorSenderPrivileged {
		u[srAlice] = int64(100)
	}
	for user, level := range users {
		u[user] = level
	}
	return map[string]any{"users": u, "events": map[string]any{"m.room.power_levels": int64(50)}}
}

func srStateIDs(r *roomstest.Room) rooms.StateMap {
	out := rooms.StateMap{}
	for k, ev := range r.State() {
		out[k] = ev.EventID()
	}
	return out
}

// srResolve resolves the states of the given branches of r, in the order
// given and reversed, and checks that both agree.
func srResolve(t *testing.T, r *roomstest.Room, states ...rooms.StateMap) rooms.StateMap {
	t.Helper()
	src := rooms.NewEventSet(r.Events()...)
	got, err := rooms.ResolveState(r.Version, states, src, nil)
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	reversed := make([]rooms.StateMap, len(states))
	for i, s := range states {
		reversed[len(states)-1-i] = s
	}
	again, err := rooms.ResolveState(r.Version, reversed, src, nil)
	if err != nil {
		t.Fatalf("resolve reversed: %v", err)
	}
	if !maps.Equal(got, again) {
		t.Fatalf("the order of the state sets changed the result:\n%v\n%v", got, again)
	}
	return got
}

// srExpect checks the resolved entries of want ("" = key absent).
func srExpect(t *testing.T, got rooms.StateMap, want map[rooms.StateTuple]string) {
	t.Helper()
	for k, id := range want {
		if have, ok := got[k]; id == "" && ok {
			t.Errorf("(%s, %s) = %s, want no entry", k.Type, k.StateKey, have)
		} else if have != id {
			t.Errorf("(%s, %s) = %q, want %q", k.Type, k.StateKey, have, id)
		}
	}
}

// srForEachVersion runs a scenario whose outcome both algorithms share under
// room versions 10 (v2.0) and 12 (v2.1).
func srForEachVersion(t *testing.T, run func(t *testing.T, v rooms.Version)) {
	for _, id := range []string{"10", "12"} {
		v, err := rooms.LookupVersion(id)
		if err != nil {
			t.Fatal(err)
		}
		t.Run("v"+id, func(t *testing.T) { run(t, v) })
	}
}

// srFork returns two branches of r from its latest event.
func srFork(r *roomstest.Room) (*roomstest.Room, *roomstest.Room) {
	last := r.Extremities()[0]
	return r.Fork(last), r.Fork(last)
}

// Alice bans Bob while Bob, concurrently, changes the power levels: the
// ban sorts first (higher power) and Bob's change fails against it.
func TestResolveState_BanVsPowerLevels(t *testing.T) {
	srForEachVersion(t, func(t *testing.T, v rooms.Version) {
		r := roomstest.NewRoom(t, v, roomstest.Options{PowerLevels: srPowerLevels(v, map[string]int64{srBob: 50})})
		srJoin(t, r, srBob)
		srJoin(t, r, srCarol)
		pl0 := r.StateEvent("m.room.power_levels", "").EventID()
		a, b := srFork(r)
		ban := srSend(t, a, roomstest.Member(srAlice, srBob, "ban"))
		bobPL := srSend(t, b, roomstest.PowerLevels(srBob, srWithUser(b, srCarol, 50)))
		got := srResolve(t, r, srStateIDs(a), srStateIDs(b))
		srExpect(t, got, map[rooms.StateTuple]string{srMemberKey(srBob): ban.EventID(), srPlKey: pl0})
		if got[srPlKey] == bobPL.EventID() {
			t.Error("the banned moderator's power levels won")
		}
	})
}

// Bob, a moderator, sets the topic while Alice bans him: Bob's topic is
// checked after the ban (mainline order puts the topic based on the older
// power levels first) and the topic resets to Alice's.
func TestResolveState_TopicReset(t *testing.T) {
	srForEachVersion(t, func(t *testing.T, v rooms.Version) {
		r := roomstest.NewRoom(t, v, roomstest.Options{PowerLevels: srPowerLevels(v, nil)})
		srJoin(t, r, srBob)
		t1 := srTopic(t, r, srAlice, "Alice's topic")
		pa := srSend(t, r, roomstest.PowerLevels(srAlice, srWithUser(r, srBob, 50)))
		a, b := srFork(r)
		t2 := srTopic(t, b, srBob, "Bob's topic")
		ban := srSend(t, a, roomstest.Member(srAlice, srBob, "ban"))
		got := srResolve(t, r, srStateIDs(a), srStateIDs(b))
		srExpect(t, got, map[rooms.StateTuple]string{srTopicKey: t1.EventID(), srMemberKey(srBob): ban.EventID(), srPlKey: pa.EventID()})
		if got[srTopicKey] == t2.EventID() {
			t.Error("the banned user's srTopic survived")
		}
	})
}

// Eve joins a public room while Alice, concurrently, makes it invite-only:
// the join rules are applied first and Eve's join fails against them.
func TestResolveState_JoinRuleEvasion(t *testing.T) {
	srForEachVersion(t, func(t *testing.T, v rooms.Version) {
		r := roomstest.NewRoom(t, v, roomstest.Options{PowerLevels: srPowerLevels(v, nil)})
		srJoin(t, r, srBob)
		a, b := srFork(r)
		jr := srSend(t, a, roomstest.JoinRules(srAlice, "invite", nil))
		srJoin(t, b, srEve)
		got := srResolve(t, r, srStateIDs(a), srStateIDs(b))
		srExpect(t, got, map[rooms.StateTuple]string{srJrKey: jr.EventID(), srMemberKey(srEve): ""})
	})
}

// One side has a chain of power-levels changes, each depending on the one
// before (Bob promotes Carol, Carol demotes herself); the other still has
// the first. The chain is replayed in auth order and its last event wins.
func TestResolveState_OffTopicPowerLevels(t *testing.T) {
	srForEachVersion(t, func(t *testing.T, v rooms.Version) {
		r := roomstest.NewRoom(t, v, roomstest.Options{PowerLevels: srPowerLevels(v, map[string]int64{srBob: 50})})
		srJoin(t, r, srBob)
		srJoin(t, r, srCarol)
		a, b := srFork(r)
		srTopic(t, a, srAlice, "unrelated")
		srSend(t, b, roomstest.PowerLevels(srBob, srWithUser(b, srCarol, 50)))
		pc := srSend(t, b, roomstest.PowerLevels(srCarol, srWithUser(b, srCarol, 0)))
		got := srResolve(t, r, srStateIDs(a), srStateIDs(b))
		srExpect(t, got, map[rooms.StateTuple]string{srPlKey: pc.EventID()})
	})
}

// Two users join through two servers at once: both joins stand.
func TestResolveState_ConcurrentJoins(t *testing.T) {
	srForEachVersion(t, func(t *testing.T, v rooms.Version) {
		r := roomstest.NewRoom(t, v, roomstest.Options{})
		a, b := srFork(r)
		jc := srJoin(t, a, srCarol)
		jd := srJoin(t, b, srDave)
		got := srResolve(t, r, srStateIDs(a), srStateIDs(b))
		srExpect(t, got, map[rooms.StateTuple]string{srMemberKey(srCarol): jc.EventID(), srMemberKey(srDave): jd.EventID()})
		if want := len(r.State()) + 2; len(got) != want {
			t.Errorf("resolved %d entries, want %d", len(got), want)
		}
	})
}

// Mainline ordering: Alice demotes Bob while Bob, concurrently, changes
// the power levels, and Alice then sets a topic on each side. Bob's change
// fails; the topic based on the newer mainline power levels wins although
// the other topic is later by origin_server_ts.
func TestResolveState_MainlineSort(t *testing.T) {
	srForEachVersion(t, func(t *testing.T, v rooms.Version) {
		r := roomstest.NewRoom(t, v, roomstest.Options{PowerLevels: srPowerLevels(v, map[string]int64{srBob: 50})})
		srJoin(t, r, srBob)
		srTopic(t, r, srAlice, "t1")
		srSend(t, r, roomstest.PowerLevels(srAlice, srWithUser(r, srCarol, 10)))
		srTopic(t, r, srAlice, "t2")
		a, b := srFork(r)
		pa2 := srSend(t, a, roomstest.PowerLevels(srAlice, srWithUser(a, srBob, 0)))
		t3 := srTopic(t, a, srAlice, "t3")
		pb := srSend(t, b, roomstest.PowerLevels(srBob, srWithUser(b, srDave, 20)))
		t4 := srTopic(t, b, srAlice, "t4")
		if t4.OriginServerTS() <= t3.OriginServerTS() {
			t.Fatal("scenario needs t4 to be later than t3")
		}
		got := srResolve(t, r, srStateIDs(a), srStateIDs(b))
		srExpect(t, got, map[rooms.StateTuple]string{srPlKey: pa2.EventID(), srTopicKey: t3.EventID()})
		if got[srPlKey] == pb.EventID() {
			t.Error("the demoted moderator's power levels won")
		}
	})
}

// srMsc4297ProblemA builds MSC4297's problem A: one state set holds outdated
// join rules while both agree that Alice, who set them, has left.
func srMsc4297ProblemA(t *testing.T, v rooms.Version) (*roomstest.Room, []rooms.StateMap, *rooms.Event) {
	r := roomstest.NewRoom(t, v, roomstest.Options{PowerLevels: srPowerLevels(v, nil)})
	s := srStateIDs(r)
	bobJoin := srJoin(t, r, srBob)
	carolJoin := srJoin(t, r, srCarol)
	jr2 := srSend(t, r, roomstest.JoinRules(srAlice, "invite", nil))
	leave := srSend(t, r, roomstest.Member(srAlice, srAlice, "leave"))
	bob2 := srSend(t, r, roomstest.State(srBob, "m.room.member", srBob, map[string]any{"membership": "join", "displayname": "Bob++"}))
	carol2 := srSend(t, r, roomstest.State(srCarol, "m.room.member", srCarol, map[string]any{"membership": "join", "displayname": "Carol++"}))
	s1 := rooms.StateMap{srCreateKey: s[srCreateKey], srPlKey: s[srPlKey], srMemberKey(srCarol): carolJoin.EventID(), srJrKey: jr2.EventID(), srMemberKey(srAlice): leave.EventID(), srMemberKey(srBob): bob2.EventID()}
	s2 := rooms.StateMap{srCreateKey: s[srCreateKey], srPlKey: s[srPlKey], srJrKey: s[srJrKey], srMemberKey(srBob): bobJoin.EventID(), srMemberKey(srAlice): leave.EventID(), srMemberKey(srCarol): carol2.EventID()}
	return r, []rooms.StateMap{s1, s2}, jr2
}

// MSC4297 problem A: v2.0 replays the join rules on top of the
// unconflicted state, where Alice has left, so both fail and the room loses
// its join rules; v2.1 replays them from an empty state and keeps Alice's
// latest join rules.
func TestResolveState_MSC4297ProblemA(t *testing.T) {
	srForEachVersion(t, func(t *testing.T, v rooms.Version) {
		r, sets, jr2 := srMsc4297ProblemA(t, v)
		want := jr2.EventID()
		if v.StateRes == rooms.StateResV2 {
			want = ""
		}
		srExpect(t, srResolve(t, r, sets...), map[rooms.StateTuple]string{srJrKey: want})
	})
}

// srMsc4297ProblemB builds MSC4297's problem B: Alice promotes Bob, Bob
// promotes Carol; one state set holds the power levels before both, the
// other Bob's, and both have seen Alice's in their auth chains.
func srMsc4297ProblemB(t *testing.T, v rooms.Version) (*roomstest.Room, []rooms.StateMap, string, *rooms.Event) {
	r := roomstest.NewRoom(t, v, roomstest.Options{PowerLevels: srPowerLevels(v, nil)})
	s := srStateIDs(r)
	bobJoin := srJoin(t, r, srBob)
	carolJoin := srJoin(t, r, srCarol)
	srSend(t, r, roomstest.PowerLevels(srAlice, srWithUser(r, srBob, 50)))
	pl2 := srSend(t, r, roomstest.PowerLevels(srBob, srWithUser(r, srCarol, 50)))
	annJoin := srJoin(t, r, srAnn)
	e := r.Fork(annJoin.EventID())
	srJoin(t, e, srEve)
	eve2 := srSend(t, e, roomstest.State(srEve, "m.room.member", srEve, map[string]any{"membership": "join", "displayname": "Eve++"}))
	common := rooms.StateMap{srCreateKey: s[srCreateKey], srMemberKey(srAlice): s[srMemberKey(srAlice)], srJrKey: s[srJrKey], srMemberKey(srBob): bobJoin.EventID(), srMemberKey(srCarol): carolJoin.EventID()}
	s1, s2 := maps.Clone(common), maps.Clone(common)
	s1[srPlKey], s1[srMemberKey(srEve)] = s[srPlKey], eve2.EventID()
	s2[srPlKey], s2[srMemberKey(srAnn)] = pl2.EventID(), annJoin.EventID()
	return r, []rooms.StateMap{s1, s2}, s[srPlKey], pl2
}

// MSC4297 problem B: the auth difference misses Alice's promotion of Bob,
// so v2.0 cannot authorise Bob's promotion of Carol and resets the power
// levels to the first event; v2.1 adds the conflicted state subgraph and
// keeps Bob's.
func TestResolveState_MSC4297ProblemB(t *testing.T) {
	srForEachVersion(t, func(t *testing.T, v rooms.Version) {
		r, sets, pl0, pl2 := srMsc4297ProblemB(t, v)
		want := pl2.EventID()
		if v.StateRes == rooms.StateResV2 {
			want = pl0
		}
		srExpect(t, srResolve(t, r, sets...), map[rooms.StateTuple]string{srPlKey: want})
	})
}

// Resolving no states gives the empty state; one state, or a state with
// itself, gives it back.
func TestResolveState_Trivial(t *testing.T) {
	srForEachVersion(t, func(t *testing.T, v rooms.Version) {
		r := roomstest.NewRoom(t, v, roomstest.Options{})
		srJoin(t, r, srBob)
		s := srStateIDs(r)
		if got := srResolve(t, r); len(got) != 0 {
			t.Errorf("no states resolved to %v", got)
		}
		for _, got := range []rooms.StateMap{srResolve(t, r, s), srResolve(t, r, s, s)} {
			if !maps.Equal(got, s) {
				t.Errorf("resolved %v, want %v", got, s)
			}
		}
	})
}

// The reverse topological power ordering ranks a version 12 creator above
// any level: Alice (creator) and Bob (level 100) change the join rules at
// once, Bob earlier. In version 10 both have 100, Bob's earlier change is
// applied first and Alice's wins; in version 12 Alice's infinite power
// sorts her change first and Bob's, applied after it, wins.
func TestResolveState_CreatorsSortFirst(t *testing.T) {
	srForEachVersion(t, func(t *testing.T, v rooms.Version) {
		r := roomstest.NewRoom(t, v, roomstest.Options{PowerLevels: srPowerLevels(v, map[string]int64{srBob: 100})})
		srJoin(t, r, srBob)
		a, b := srFork(r)
		bobs := srSend(t, b, roomstest.JoinRules(srBob, "knock", nil))
		alices := srSend(t, a, roomstest.JoinRules(srAlice, "invite", nil))
		if bobs.OriginServerTS() >= alices.OriginServerTS() {
			t.Fatal("scenario needs Bob's change to be the earlier one")
		}
		want := alices.EventID()
		if v.Creators == rooms.CreatorSenderPrivileged {
			want = bobs.EventID()
		}
		srExpect(t, srResolve(t, r, srStateIDs(a), srStateIDs(b)), map[rooms.StateTuple]string{srJrKey: want})
	})
}
