package rooms

import (
	"fmt"
	"maps"
	"math/rand"
	"testing"
)

// srPropertySeeds is how many random rooms each property test builds per
// room version; seeds are srPropertySeedBase, +1, ... and every failure
// names its seed.
const (
	srPropertySeeds    = 25
	srPropertySeedBase = 20261122
)

var srUsers = func() []string {
	var out []string
	for i := 0; i < 9; i++ {
		out = append(out, fmt.Sprintf("@u%d:s%d.example", i, i%3))
	}
	return out
}()

// srRandomRoom builds a random valid room DAG from seed: users on three
// servers join, leave, get kicked, banned and unbanned, change power
// levels, topics, names and join rules on up to four concurrent branches,
// which fork and merge (by state resolution). It returns the room and its
// branches (at least two) at the end.
func srRandomRoom(t *testing.T, v Version, seed int64) (*srRoom, []*srBranch) {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	creator := srUsers[0]
	pl := srPowerLevels(v, creator, map[string]int64{srUsers[1]: 100, srUsers[2]: 50, srUsers[3]: 50})
	pl["events"] = map[string]any{"m.room.power_levels": int64(50), "m.room.join_rules": int64(50)}
	r, base := newSRRoom(t, v, true, creator, pl)
	for _, u := range srUsers[1:6] {
		r.join(base, u)
	}
	branches := []*srBranch{base}
	pick := func() string { return srUsers[rng.Intn(len(srUsers))] }
	steps := 60 + rng.Intn(60)
	for step := 0; step < steps; step++ {
		bi := rng.Intn(len(branches))
		b := branches[bi]
		switch op := rng.Intn(20); {
		case op < 2 && len(branches) < 4:
			branches = append(branches, b.fork())
		case op < 3 && len(branches) > 1:
			oi := (bi + 1 + rng.Intn(len(branches)-1)) % len(branches)
			o := branches[oi]
			merged, err := ResolveState(v, []StateMap{b.state, o.state}, r.set, nil)
			if err != nil {
				t.Fatalf("seed %d: merge: %v", seed, err)
			}
			b.state = merged
			b.heads = append(b.heads, o.heads...)
			branches = append(branches[:oi], branches[oi+1:]...)
		default:
			srRandomEvent(r, b, rng, pick)
		}
	}
	for len(branches) < 2 {
		branches = append(branches, branches[0].fork())
	}
	for _, b := range branches {
		// Make every branch differ from the others at least a little.
		for tries := 0; tries < 20; tries++ {
			if srRandomEvent(r, b, rng, pick) {
				break
			}
		}
	}
	return r, branches
}

// srRandomEvent tries one random event on b and reports whether the auth
// rules let it in.
func srRandomEvent(r *srRoom, b *srBranch, rng *rand.Rand, pick func() string) bool {
	sender, target := pick(), pick()
	var err error
	member := func(sender, target, membership string) {
		_, err = r.send(b, "m.room.member", StringPtr(target), sender, map[string]any{"membership": membership})
	}
	switch op := rng.Intn(12); op {
	case 0, 1:
		member(sender, sender, "join")
	case 2:
		member(sender, sender, "leave")
	case 3:
		member(sender, target, "leave") // a kick, or an unban
	case 4:
		member(sender, target, "ban")
	case 5:
		member(sender, target, "invite")
	case 6, 7:
		level := []int64{-1, 0, 10, 50, 100}[rng.Intn(5)]
		_, err = r.send(b, "m.room.power_levels", StringPtr(""), sender, r.powerLevels(b, target, level))
	case 8:
		rule := []string{"public", "invite"}[rng.Intn(2)]
		_, err = r.send(b, "m.room.join_rules", StringPtr(""), sender, map[string]any{"join_rule": rule})
	case 9:
		_, err = r.send(b, "m.room.topic", StringPtr(""), sender, map[string]any{"topic": fmt.Sprintf("topic %d", rng.Intn(1000))})
	case 10:
		_, err = r.send(b, "m.room.name", StringPtr(""), sender, map[string]any{"name": fmt.Sprintf("name %d", rng.Intn(1000))})
	default:
		_, err = r.send(b, "m.room.member", StringPtr(sender), sender, map[string]any{"membership": "join", "displayname": fmt.Sprintf("d%d", rng.Intn(1000))})
	}
	return err == nil
}

// srProperty runs check over random rooms of both room versions.
func srProperty(t *testing.T, check func(t *testing.T, seed int64, r *srRoom, states []StateMap)) {
	for _, vid := range []string{"10", "12"} {
		v := mustVersion(t, vid)
		for i := int64(0); i < srPropertySeeds; i++ {
			seed := srPropertySeedBase + i
			r, branches := srRandomRoom(t, v, seed)
			states := make([]StateMap, len(branches))
			for j, b := range branches {
				states[j] = b.state
			}
			check(t, seed, r, states)
			if t.Failed() {
				t.Fatalf("room version %s, seed %d failed", vid, seed)
			}
		}
	}
}

func srMustResolve(t *testing.T, seed int64, v Version, states []StateMap, src EventSource, cache *AuthChainCache) StateMap {
	t.Helper()
	got, err := ResolveState(v, states, src, cache)
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	return got
}

func srSameState(t *testing.T, seed int64, what string, got, want StateMap) {
	t.Helper()
	if !maps.Equal(got, want) {
		t.Errorf("seed %d: %s:\n%s", seed, what, diffStates(flatState(got), flatState(want)))
	}
}

// The resolved state does not depend on the order of the state sets, on
// repeating one of them, on the order the events are stored in, on whether
// the source has the reverse auth index, or on what the cache holds.
func TestResolveStateProperty_OrderIndependent(t *testing.T) {
	srProperty(t, func(t *testing.T, seed int64, r *srRoom, states []StateMap) {
		want := srMustResolve(t, seed, r.v, states, r.set, nil)
		rng := rand.New(rand.NewSource(seed))
		reversed := make([]StateMap, len(states))
		for i, s := range states {
			reversed[len(states)-1-i] = s
		}
		srSameState(t, seed, "state sets reversed", srMustResolve(t, seed, r.v, reversed, r.set, nil), want)
		shuffled := append([]StateMap(nil), states...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		srSameState(t, seed, "state sets shuffled", srMustResolve(t, seed, r.v, shuffled, r.set, nil), want)
		repeated := append(append([]StateMap(nil), states...), states[rng.Intn(len(states))])
		srSameState(t, seed, "a state set repeated", srMustResolve(t, seed, r.v, repeated, r.set, nil), want)

		events := append([]*Event(nil), r.events...)
		rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })
		reordered := NewEventSet(events...)
		srSameState(t, seed, "events stored in another order", srMustResolve(t, seed, r.v, states, reordered, nil), want)
		srSameState(t, seed, "source without reverse auth index", srMustResolve(t, seed, r.v, states, noChildren{reordered}, nil), want)
		warm := NewAuthChainCache()
		for i := 0; i < len(states); i++ {
			srMustResolve(t, seed, r.v, states[i:i+1], r.set, warm)
			srMustResolve(t, seed, r.v, states[:i+1], r.set, warm)
		}
		srSameState(t, seed, "warm auth chain cache", srMustResolve(t, seed, r.v, states, r.set, warm), want)
	})
}

// Resolving a state with itself gives it back.
func TestResolveStateProperty_Idempotent(t *testing.T) {
	srProperty(t, func(t *testing.T, seed int64, r *srRoom, states []StateMap) {
		for _, s := range states {
			srSameState(t, seed, "resolve(S)", srMustResolve(t, seed, r.v, []StateMap{s}, r.set, nil), s)
			srSameState(t, seed, "resolve(S, S)", srMustResolve(t, seed, r.v, []StateMap{s, s}, r.set, nil), s)
		}
	})
}

// What every state set holds with the same event stays in the resolved
// state (step 5): neither algorithm resets state all sides agree on, even
// though v2.1 replays the conflicted events from an empty state. Every
// other resolved event comes from a state set or the auth chains.
func TestResolveStateProperty_AgreedStateKept(t *testing.T) {
	srProperty(t, func(t *testing.T, seed int64, r *srRoom, states []StateMap) {
		got := srMustResolve(t, seed, r.v, states, r.set, nil)
		delta, err := ResolveStateDelta(r.v, states, r.set, nil)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		known := make(map[string]bool)
		cache := NewAuthChainCache()
		for k, id := range states[0] {
			agreed := true
			for _, s := range states[1:] {
				if s[k] != id {
					agreed = false
				}
			}
			if agreed && got[k] != id {
				t.Errorf("seed %d: agreed (%s, %s) = %s resolved to %q", seed, k.Type, k.StateKey, id, got[k])
			}
			if _, changed := delta[k]; agreed && changed {
				t.Errorf("seed %d: delta changes agreed (%s, %s)", seed, k.Type, k.StateKey)
			}
		}
		for _, s := range states {
			for _, id := range s {
				known[id] = true
				chain, err := cache.AuthChain(r.set, id)
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range chain {
					known[a] = true
				}
			}
		}
		for k, id := range got {
			if !known[id] {
				t.Errorf("seed %d: (%s, %s) resolved to %s, which no state set or auth chain holds", seed, k.Type, k.StateKey, id)
			}
		}
		if _, ok := got[CreateTuple]; !ok {
			t.Errorf("seed %d: the resolved state has no create event", seed)
		}
	})
}
