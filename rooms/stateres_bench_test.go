package rooms

import (
	"fmt"
	"math/rand"
	"testing"
)

// srForkedRoom builds a room of version v with members joined users and
// two forks that differ in forkEvents events each way: power-levels
// changes, memberships (leaves, kicks, bans, new joins, display names) and
// topics. Events are unsigned (hash-shaped IDs) to keep the setup short.
func srForkedRoom(tb testing.TB, v Version, members, forkEvents int, seed int64) (*srRoom, []StateMap) {
	tb.Helper()
	admin := "@admin:hub.example"
	pl := srPowerLevels(v, admin, map[string]int64{"@mod0:hub.example": 50, "@mod1:hub.example": 50})
	r, base := newSRRoom(tb, v, false, admin, pl)
	r.join(base, "@mod0:hub.example")
	r.join(base, "@mod1:hub.example")
	user := func(i int) string { return fmt.Sprintf("@user%d:s%d.example", i, i%50) }
	for i := 0; i < members; i++ {
		r.join(base, user(i))
	}
	rng := rand.New(rand.NewSource(seed))
	forks := []*srBranch{base.fork(), base.fork()}
	for f, b := range forks {
		sent := 0
		for sent < forkEvents {
			u := user(rng.Intn(members))
			var err error
			switch op := rng.Intn(10); {
			case op < 2:
				level := []int64{0, 10, 20, 50}[rng.Intn(4)]
				_, err = r.send(b, "m.room.power_levels", StringPtr(""), admin, r.powerLevels(b, u, level))
			case op < 4:
				r.ts += int64(f) // keep the forks' timestamps apart
				_, err = r.send(b, "m.room.topic", StringPtr(""), admin, map[string]any{"topic": fmt.Sprintf("fork %d topic %d", f, sent)})
			case op < 5:
				_, err = r.send(b, "m.room.member", StringPtr(u), u, map[string]any{"membership": "leave"})
			case op < 6:
				_, err = r.send(b, "m.room.member", StringPtr(u), "@mod0:hub.example", map[string]any{"membership": "ban"})
			case op < 7:
				_, err = r.send(b, "m.room.member", StringPtr(u), "@mod1:hub.example", map[string]any{"membership": "leave"})
			case op < 8:
				nu := fmt.Sprintf("@new%d-%d:s%d.example", f, sent, sent%7)
				_, err = r.send(b, "m.room.member", StringPtr(nu), nu, map[string]any{"membership": "join"})
			default:
				_, err = r.send(b, "m.room.member", StringPtr(u), u, map[string]any{"membership": "join", "displayname": fmt.Sprintf("u%d", sent)})
			}
			if err == nil {
				sent++
			}
		}
	}
	return r, []StateMap{forks[0].state, forks[1].state}
}

// BenchmarkResolveState resolves two forks of a large room that differ in
// 100 events (50 on each side). "warm" keeps the auth chain cache across
// resolutions, as the engine does; "cold" starts each with an empty one;
// "delta" is warm ResolveStateDelta, which leaves out the copy of the
// unconflicted state into the result; "split" is warm ResolveSplit on states
// split beforehand, as an engine with shared state snapshots would pass
// them: the resolution proper, independent of the room's size.
func BenchmarkResolveState(b *testing.B) {
	for _, members := range []int{10_000, 100_000} {
		for _, vid := range []string{"10", "12"} {
			b.Run(fmt.Sprintf("members=%d/v%s", members, vid), func(b *testing.B) {
				v := mustVersion(b, vid)
				r, states := srForkedRoom(b, v, members, 50, 1)
				split := SplitStateMaps(states)
				for _, mode := range []string{"warm", "cold", "delta", "split"} {
					b.Run(mode, func(b *testing.B) {
						cache := NewAuthChainCache()
						b.ReportAllocs()
						b.ResetTimer()
						for i := 0; i < b.N; i++ {
							switch mode {
							case "cold":
								cache = NewAuthChainCache()
							case "delta":
								delta, err := ResolveStateDelta(v, states, r.set, cache)
								if err != nil || len(delta) == 0 {
									b.Fatalf("delta of %d entries, error %v", len(delta), err)
								}
								continue
							case "split":
								resolved, err := ResolveSplit(v, split, r.set, cache)
								if err != nil || len(resolved) == 0 {
									b.Fatalf("%d resolved entries, error %v", len(resolved), err)
								}
								continue
							}
							got, err := ResolveState(v, states, r.set, cache)
							if err != nil {
								b.Fatal(err)
							}
							if len(got) < members {
								b.Fatalf("resolved %d entries for %d members", len(got), members)
							}
						}
					})
				}
			})
		}
	}
}
