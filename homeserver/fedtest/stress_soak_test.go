package fedtest

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
)

// The bounded soak `go test ./...` runs, per room version (v10 and v12
// run in parallel): 1,000 steps across the four servers, 500 under the
// race detector, which makes each step about ten times slower, so that
// CI's -race run still takes 1,000 steps in all and the package's suite
// stays within a few minutes.
const (
	defaultSoakSteps     = 1000
	defaultRaceSoakSteps = 500
	// soakCheckpoint is how many steps pass between convergence
	// checkpoints.
	soakCheckpoint = 250
)

// soakSteps is the soak's length: -soak-steps, else FERRY_SOAK_STEPS,
// else the bounded default.
func soakSteps(t *testing.T) int {
	if *soakStepsFlag > 0 {
		return *soakStepsFlag
	}
	if env := os.Getenv("FERRY_SOAK_STEPS"); env != "" {
		n, err := strconv.Atoi(env)
		if err != nil || n <= 0 {
			t.Fatalf("FERRY_SOAK_STEPS=%q: want a positive number of steps", env)
		}
		return n
	}
	if raceEnabled {
		return defaultRaceSoakSteps
	}
	return defaultSoakSteps
}

// soakStats counts what a soak did.
type soakStats struct {
	ops, refused, partitions, garbage, heals, crashes, restarts int
	checkpoints                                                 int
	byKind                                                      map[string]int
}

// TestStressSoak: four servers, two rooms, a fixed number of random
// steps (messages, topics, power changes, kicks, bans, unbans, joins,
// join rule changes, partitions, servers answering garbage, heals,
// crashes and graceful restarts) drawn from the seed; every
// soakCheckpoint steps and at the end the network heals and every room
// must converge on every server. Refusals (an operation the sender's own view
// of the room does not allow) are expected and counted; any other error
// fails.
func TestStressSoak(t *testing.T) {
	t.Parallel()
	forEachVersion(t, func(t *testing.T, version string) {
		steps := soakSteps(t)
		c := newCluster(t, 4)
		// The number of steps is part of what a seed replays (and its
		// default differs under -race).
		t.Logf("%d steps; replay with -seed %d -soak-steps %d", steps, c.Seed, steps)
		roomsUnderTest := []*stressRoom{c.SetupRoom(version), c.SetupRoom(version)}
		st := soakStats{byKind: map[string]int{}}
		partitioned := false
		start := time.Now()
		for step := range steps {
			r := roomsUnderTest[c.Rand.IntN(len(roomsUnderTest))]
			i := c.Rand.IntN(len(c.Nodes))
			n := c.Nodes[i]
			anchor, guest := r.Anchors[i], r.Guests[i]
			target := r.Guests[c.Rand.IntN(len(r.Guests))]
			var err error
			kind := ""
			switch p := c.Rand.IntN(100); {
			case p < 40:
				kind = "message"
				sender := anchor
				if c.Rand.IntN(2) == 0 {
					sender = guest
				}
				_, err = c.Send(n, r.ID, message(sender, fmt.Sprintf("step %d", step)))
			case p < 50:
				kind = "topic"
				_, err = c.Send(n, r.ID, stateEvent(anchor, "m.room.topic", "", map[string]any{"topic": fmt.Sprintf("topic of step %d", step)}))
			case p < 58:
				kind = "power"
				pl := c.PowerLevels(n, r)
				pl["users"].(map[string]any)[target] = []int{0, 10, 50}[c.Rand.IntN(3)]
				_, err = c.Send(n, r.ID, stateEvent(anchor, "m.room.power_levels", "", pl))
			case p < 65:
				kind = "kick"
				_, err = c.Send(n, r.ID, stateEvent(anchor, "m.room.member", target, map[string]any{"membership": "leave"}))
			case p < 69:
				kind = "ban"
				_, err = c.Send(n, r.ID, stateEvent(anchor, "m.room.member", target, map[string]any{"membership": "ban"}))
			case p < 73:
				kind = "unban"
				if n.membership(t, r.ID, target) == "ban" {
					_, err = c.Send(n, r.ID, stateEvent(anchor, "m.room.member", target, map[string]any{"membership": "leave"}))
				}
			case p < 83:
				kind = "join"
				if n.membership(t, r.ID, guest) != "join" {
					var ev *rooms.Event
					ev, err = n.Engine.JoinRoom(testContext(t), r.ID, guest, nil)
					if err == nil {
						c.Record(r.ID, ev.EventID())
					}
				}
			case p < 87:
				kind = "join rule"
				rule := []string{"public", "invite"}[c.Rand.IntN(2)]
				_, err = c.Send(n, r.ID, stateEvent(anchor, "m.room.join_rules", "", map[string]any{"join_rule": rule}))
			case p < 91:
				kind = "partition"
				switch {
				case partitioned:
				case c.Rand.IntN(4) == 0:
					// A server that answers everyone with garbage.
					c.Net.Break(n, garbage)
					partitioned = true
					st.garbage++
				default:
					side1, side2 := randomSplit(c)
					c.Net.Partition(side1, side2)
					partitioned = true
					st.partitions++
				}
			case p < 97:
				kind = "heal"
				if partitioned {
					c.Net.Heal()
					partitioned = false
					st.heals++
				}
			default:
				kind = "restart"
				crash := c.Rand.IntN(2) == 0
				n.Restart(t, crash)
				if crash {
					st.crashes++
				} else {
					st.restarts++
				}
			}
			st.ops++
			st.byKind[kind]++
			if err != nil {
				if !isRefusal(err) {
					c.Fatalf("step %d (%s on %s): %v", step, kind, n.Name, err)
				}
				st.refused++
			}
			if (step+1)%soakCheckpoint == 0 && step+1 < steps {
				// A checkpoint: heal and require convergence, so that a
				// divergence shows near the steps that caused it.
				c.Net.Heal()
				partitioned = false
				for _, r := range roomsUnderTest {
					c.Converge(r.ID, r.Speakers(c.Nodes))
				}
				st.checkpoints++
			}
		}
		c.Net.Heal()
		t.Logf("%d steps in %v: %v; %d refused by the sender's view, %d partitions, %d servers answering garbage, %d heals, %d crashes, %d graceful restarts, %d convergence checkpoints",
			steps, time.Since(start).Round(time.Millisecond), st.byKind, st.refused, st.partitions, st.garbage, st.heals, st.crashes, st.restarts, st.checkpoints)
		total := 0
		for _, r := range roomsUnderTest {
			total += c.Converge(r.ID, r.Speakers(c.Nodes)).Events
		}
		t.Logf("converged: %d events compared over %d rooms and %d servers in %v", total, len(roomsUnderTest), len(c.Nodes), time.Since(start).Round(time.Millisecond))
	})
}

// stateEvent is a state event from sender.
func stateEvent(sender, typ, stateKey string, content map[string]any) homeserver.LocalEvent {
	return homeserver.LocalEvent{Type: typ, StateKey: rooms.StringPtr(stateKey), Sender: sender, Content: content}
}

// randomSplit cuts the cluster's nodes into two non-empty sides.
func randomSplit(c *cluster) ([]*node, []*node) {
	for {
		var side1, side2 []*node
		for _, n := range c.Nodes {
			if c.Rand.IntN(2) == 0 {
				side1 = append(side1, n)
			} else {
				side2 = append(side2, n)
			}
		}
		if len(side1) > 0 && len(side2) > 0 {
			return side1, side2
		}
	}
}

// isRefusal tells an operation the room's rules refused (as the sender's
// server sees the room) from a failure.
func isRefusal(err error) bool {
	var he *homeserver.Error
	if errors.As(err, &he) && (he.Kind == homeserver.KindForbidden || he.Kind == homeserver.KindBadRequest) {
		return true
	}
	var refusal *homeserver.JoinRefusal
	return errors.As(err, &refusal) || errors.Is(err, homeserver.ErrEveryServerFailed)
}
