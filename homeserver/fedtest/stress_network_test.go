package fedtest

import (
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/federation"
	"github.com/ferry-matrix/ferry/homeserver"
)

var (
	seedFlag = flag.Int64("seed", 0, "seed of the stress scenarios' random choices; 0 takes one from the clock (printed by every scenario)")
	// soakStepsFlag lengthens the randomised soak; FERRY_SOAK_STEPS does
	// the same for runs that cannot pass flags.
	soakStepsFlag = flag.Int("soak-steps", 0, "random steps of TestStressSoak (0: the bounded CI form)")
)

// runSeed is the seed of this test process: every scenario derives its
// random source from it and its own name, so a scenario replays alone
// with the same choices whatever else runs.
var runSeed = sync.OnceValue(func() int64 {
	if *seedFlag != 0 {
		return *seedFlag
	}
	return time.Now().UnixNano()
})

// scenarioRand returns the random source of a scenario, seeded by the
// run's seed and the test's name. It logs the seed and the command that
// replays the test, and logs them again if the test fails, so that every
// failure report carries them.
func scenarioRand(t *testing.T) (*rand.Rand, int64) {
	t.Helper()
	seed := runSeed()
	replay := fmt.Sprintf("go test ./homeserver/fedtest -run '%s' -seed %d", runPattern(t.Name()), seed)
	t.Logf("seed %d (replay: %s)", seed, replay)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d; replay: %s", seed, replay)
		}
	})
	h := fnv.New64a()
	h.Write([]byte(t.Name()))
	return rand.New(rand.NewPCG(uint64(seed), h.Sum64())), seed
}

// runPattern is the -run pattern that selects exactly the named test.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// fault is what the network does to requests on one link.
type fault int

const (
	// pass delivers requests.
	pass fault = iota
	// refuse cuts the request off: the connection closes with no answer,
	// as when a firewall resets it.
	refuse
	// hang holds the request with no answer until the fault is lifted,
	// the caller gives up or the node stops.
	hang
	// garbage answers 200 with a body that is not JSON.
	garbage
)

func (f fault) String() string {
	switch f {
	case pass:
		return "pass"
	case refuse:
		return "refuse"
	case hang:
		return "hang"
	case garbage:
		return "garbage"
	}
	return fmt.Sprintf("fault(%d)", int(f))
}

// anyOrigin in a link's from matches every request, signed or not.
const anyOrigin = "*"

type link struct{ from, to string }

// network is the fault injector between the nodes of one test. It stands
// at each node's federation listener and judges every request by its
// X-Matrix origin: the rules name links (origin, destination) and what
// happens on them. Because every server-to-server request is signed with
// its origin, a rule covers outbound transactions and the pulls alike
// (/get_missing_events, /state_ids, /event, /backfill, the membership
// handshakes); unsigned requests (key fetches) pass unless a rule names
// anyOrigin. The engine and the client are untouched.
type network struct {
	mu    sync.Mutex
	rules map[link]fault
	// lifted is closed when hung requests must end (a heal), then
	// replaced.
	lifted chan struct{}
	// stopping holds, per destination, a channel closed when the node
	// stops, so that a hung request does not hold its shutdown.
	stopping map[string]chan struct{}
	// refused counts requests a rule stopped, by link.
	refused map[link]int
	// requests counts every request, by link and endpoint.
	requests map[link]map[string]int
}

func newNetwork() *network {
	return &network{
		rules:    map[link]fault{},
		lifted:   make(chan struct{}),
		stopping: map[string]chan struct{}{},
		refused:  map[link]int{},
		requests: map[link]map[string]int{},
	}
}

// closedChan is the stopping channel of a node that is not running.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// started readies the network for a node that starts.
func (nw *network) started(name string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.stopping[name] = make(chan struct{})
}

// Set makes requests from `from` to `to` meet f (pass removes the rule).
func (nw *network) Set(from, to string, f fault) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if f == pass {
		delete(nw.rules, link{from, to})
		return
	}
	nw.rules[link{from, to}] = f
}

// Partition cuts every link between the two sides, both ways: requests
// are refused.
func (nw *network) Partition(side1, side2 []*node) {
	for _, a := range side1 {
		for _, b := range side2 {
			nw.Set(a.Name, b.Name, refuse)
			nw.Set(b.Name, a.Name, refuse)
		}
	}
}

// Break makes every request to `to` meet f, whoever sends it.
func (nw *network) Break(to *node, f fault) { nw.Set(anyOrigin, to.Name, f) }

// Heal removes every rule and ends the requests held by hang faults.
func (nw *network) Heal() {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	clear(nw.rules)
	close(nw.lifted)
	nw.lifted = make(chan struct{})
}

// Refused returns how many requests from `from` to `to` a rule stopped.
func (nw *network) Refused(from, to string) int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.refused[link{from, to}]
}

// releaseTo ends the hung requests to a node that stops; until it starts
// again, no request to it hangs.
func (nw *network) releaseTo(name string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if ch := nw.stopping[name]; ch != nil && ch != closedChan {
		close(ch)
	}
	nw.stopping[name] = closedChan
}

// Requests returns how many requests from `from` to `to` reached the
// endpoint (the path's segment after the API version, e.g. "event",
// "get_missing_events", "send"), faulted or not.
func (nw *network) Requests(from, to, endpoint string) int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.requests[link{from, to}][endpoint]
}

// endpointOf names the endpoint of a federation path:
// /_matrix/federation/v1/event/$x is "event".
func endpointOf(path string) string {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(parts) < 4 {
		return path
	}
	return parts[3]
}

// judge returns the fault for a request from origin to `to`, with the
// channels that end a hang.
func (nw *network) judge(origin, to, endpoint string) (fault, <-chan struct{}, <-chan struct{}) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	l := link{origin, to}
	if nw.requests[l] == nil {
		nw.requests[l] = map[string]int{}
	}
	nw.requests[l][endpoint]++
	f, ok := nw.rules[link{anyOrigin, to}]
	if !ok && origin != "" {
		f = nw.rules[link{origin, to}]
	}
	if f != pass {
		nw.refused[link{origin, to}]++
	}
	return f, nw.lifted, nw.stopping[to]
}

// garbageBody is what a garbage fault answers: bytes no JSON reader
// accepts, with a NUL, broken UTF-8 and an unterminated object.
var garbageBody = []byte("\x00\xff\xfe{\"pdus\": [ garbage")

// handler wraps a node's federation handler with the network's rules.
// Requests that pass and carry an origin tell the node's delivery that
// the origin is up, as cmd/ferry's server does.
func (nw *network) handler(to string, next http.Handler, d *homeserver.Delivery) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := requestOrigin(r)
		f, lifted, stopping := nw.judge(origin, to, endpointOf(r.URL.Path))
		switch f {
		case refuse:
			// Aborting the handler closes the connection with no
			// response; the server logs nothing for it.
			panic(http.ErrAbortHandler)
		case hang:
			select {
			case <-r.Context().Done():
			case <-lifted:
			case <-stopping:
			}
			panic(http.ErrAbortHandler)
		case garbage:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.Write(garbageBody)
			return
		}
		next.ServeHTTP(w, r)
		if d != nil && origin != "" {
			d.DestinationSeen(origin)
		}
	})
}

// requestOrigin is the X-Matrix origin of a request, "" when unsigned or
// unreadable. It is not verified: the rules only need to know who the
// request claims to come from, and the real handler verifies it.
func requestOrigin(r *http.Request) string {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return ""
	}
	x, err := federation.ParseXMatrix(auth)
	if err != nil {
		return ""
	}
	return x.Origin
}
