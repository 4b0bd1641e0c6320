// Package fedtest runs several real Ferry servers in one test process,
// each with its own server name (127.0.0.1:port), signing key, SQLite
// database and TLS listener, federating over loopback. The package holds
// only test files: it imports both federation and homeserver, which the
// import rules let no library package do.
//
// The stress suite (stress_*_test.go) puts the servers behind a fault
// injector (partitions, hanging and garbage peers), restarts and crashes
// them, and checks that every server converges to the same state; its
// random choices come from a seed printed by each scenario (-seed to
// replay). docs/testing.md explains how to run and replay it.
package fedtest

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/federation"
	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// The federation client is what the engine joins rooms through.
var (
	_ homeserver.Joiner        = (*federation.Client)(nil)
	_ homeserver.AliasResolver = (*federation.Client)(nil)
	_ homeserver.Transport     = clientTransport{}
)

// waitTimeout bounds every wait of the harness.
const waitTimeout = 20 * time.Second

// node is one running server, wired as cmd/ferry's start wires it, except
// that the federation handler is served on a listener the harness opened
// first, so the server name can name its port. A node can be stopped
// (gracefully or as a crash) and started again on the same data
// directory and port: the fields then name the new components.
type node struct {
	Name   string
	Own    *keys.Own
	DB     *store.DB
	Client *federation.Client
	Ring   *keys.Ring
	Engine *homeserver.Engine
	Fed    *federation.Server
	// Remote is the engine's remote: the client, with hooks for tests.
	Remote *hookedRemote
	// Delivery is the outbound delivery, nil unless the node delivers.
	Delivery *homeserver.Delivery

	txn int

	opts    nodeOptions
	dir     string
	running *runningParts
}

// nodeOptions shape a node.
type nodeOptions struct {
	// Delivering runs the engine's outbound delivery; without it, queued
	// events wait for Flush.
	Delivering bool
	// Net, when set, stands between this node and the others: its faults
	// decide what the node's federation listener answers to each origin.
	Net *network
	// Engine bounds (zero: the engine's defaults).
	FetchTimeout     time.Duration
	MaxFetchedEvents int
	// RequestTimeout bounds each outbound request (zero: the client's
	// default).
	RequestTimeout time.Duration
	// BackoffBase and BackoffMax shape the delivery's backoff (zero: the
	// defaults, which are far too long for a test that heals partitions).
	BackoffBase, BackoffMax time.Duration
}

// stressMaxFetched is the stress nodes' bound on events fetched one by
// one for a PDU (the engine's default is 200).
const stressMaxFetched = 40

// stressOptions are the options of the stress scenarios: delivering
// nodes behind a fault injector, with a short backoff so that healing and
// restarts take effect in milliseconds, not minutes, and timeouts short
// enough for the hanging-peer scenario yet long enough for a loaded
// 2-CPU machine under -race.
func stressOptions(net *network) nodeOptions {
	return nodeOptions{
		Delivering:       true,
		Net:              net,
		MaxFetchedEvents: stressMaxFetched,
		FetchTimeout:     5 * time.Second,
		RequestTimeout:   10 * time.Second,
		BackoffBase:      20 * time.Millisecond,
		BackoffMax:       200 * time.Millisecond,
	}
}

// runningParts are what one start of a node opened, closed in reverse.
type runningParts struct {
	srv      *http.Server
	served   chan struct{}
	handlers handlerCount
	delivery *homeserver.Delivery
	client   *federation.Client
	db       *store.DB
}

// handlerCount counts the requests a node's handler is serving, so that a
// crashed node's last handlers (which http.Server.Close does not wait
// for) are waited out before the test may end: they log to the test.
type handlerCount struct {
	mu   sync.Mutex
	n    int
	idle *sync.Cond
}

func (h *handlerCount) wrap(next http.Handler) http.Handler {
	h.idle = sync.NewCond(&h.mu)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.n++
		h.mu.Unlock()
		defer func() {
			h.mu.Lock()
			h.n--
			if h.n == 0 {
				h.idle.Broadcast()
			}
			h.mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
}

// wait returns once no request is being served.
func (h *handlerCount) wait() {
	if h.idle == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for h.n > 0 {
		h.idle.Wait()
	}
}

// testLogger writes errors to the test log.
func testLogger(t *testing.T, name string) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel).With().Str("server", name).Logger()
}

// startNode starts one server; it stops when the test ends. Its queued
// events wait for Flush.
func startNode(t *testing.T) *node { return startNodeWith(t, false) }

// startNodeWith starts one server; with delivering, the engine's outbound
// delivery (homeserver.Delivery) sends what it queues, and Flush is not
// needed (nor to be used).
func startNodeWith(t *testing.T, delivering bool) *node {
	t.Helper()
	return startNodeOpts(t, nodeOptions{Delivering: delivering})
}

// startNodeOpts starts one server shaped by opts; it stops when the test
// ends.
func startNodeOpts(t *testing.T, opts nodeOptions) *node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{Name: ln.Addr().String(), dir: t.TempDir(), opts: opts}
	t.Cleanup(func() { n.stop(false) })
	if err := n.start(t, ln); err != nil {
		t.Fatalf("start %s: %v", n.Name, err)
	}
	return n
}

// start opens the node's store, keys, engine and listener; ln is the
// listener to serve on, or nil to listen again on the node's address.
func (n *node) start(t *testing.T, ln net.Listener) error {
	ctx := context.Background()
	if ln == nil {
		var err error
		// The port was ours a moment ago; another test may grab it in
		// between only by a rare accident, so a refusal is retried.
		for attempt := 0; ; attempt++ {
			ln, err = net.Listen("tcp", n.Name)
			if err == nil || attempt == 50 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("listen again on %s: %w", n.Name, err)
		}
	}
	name := n.Name
	log := testLogger(t, name)
	parts := &runningParts{}
	fail := func(err error) error {
		ln.Close()
		n.closeParts(parts, true)
		return err
	}
	own, _, err := keys.LoadOrGenerate(n.dir, crand.Reader)
	if err != nil {
		return fail(err)
	}
	dbLog := log.With().Str("component", "store").Logger()
	db, err := store.Open(ctx, filepath.Join(n.dir, "ferry.db"), store.Options{Logger: &dbLog, Synchronous: "NORMAL"})
	if err != nil {
		return fail(err)
	}
	parts.db = db
	client, err := federation.NewClient(federation.ClientConfig{
		ServerName:            name,
		Keys:                  own,
		InsecureSkipVerify:    true,
		AllowPrivateAddresses: true,
		RequestTimeout:        n.opts.RequestTimeout,
		ResponseHeaderTimeout: n.opts.RequestTimeout,
		Logger:                log.With().Str("component", "federation_client").Logger(),
	})
	if err != nil {
		return fail(err)
	}
	parts.client = client
	ring, err := keys.NewRing(keys.RingConfig{ServerName: name, Own: own, Fetcher: client, Cache: db})
	if err != nil {
		return fail(err)
	}
	remote := &hookedRemote{Client: client}
	engine := &homeserver.Engine{
		ServerName:       name,
		Signer:           own.Signer(name),
		Store:            db,
		Keys:             ring,
		Remote:           remote,
		Logger:           log.With().Str("component", "engine").Logger(),
		FetchTimeout:     n.opts.FetchTimeout,
		MaxFetchedEvents: n.opts.MaxFetchedEvents,
	}
	var delivery *homeserver.Delivery
	if n.opts.Delivering {
		delivery = &homeserver.Delivery{
			ServerName: name, Store: db, Transport: clientTransport{client},
			BackoffBase: n.opts.BackoffBase, BackoffMax: n.opts.BackoffMax,
			Logger: log.With().Str("component", "delivery").Logger(),
		}
		if err := delivery.Start(context.Background()); err != nil {
			return fail(err)
		}
		parts.delivery = delivery
		engine.OnQueued = func(dests []string) { delivery.Notify(dests...) }
	}
	fed := federation.NewServer(name, own)
	fed.KeyRing = ring
	fed.Rooms = engine
	fed.Directory = engine
	fed.Logger = log.With().Str("component", "federation").Logger()

	cert, _, err := federation.LoadOrCreateSelfSigned(n.dir, name, time.Now())
	if err != nil {
		return fail(err)
	}
	var handler http.Handler = fed.Handler()
	if n.opts.Net != nil {
		n.opts.Net.started(name)
		handler = n.opts.Net.handler(name, handler, delivery)
	}
	handler = parts.handlers.wrap(handler)
	srv := &http.Server{Handler: handler, TLSConfig: federation.TLSConfig(cert), ReadHeaderTimeout: 10 * time.Second}
	parts.srv, parts.served = srv, make(chan struct{})
	go func() {
		defer close(parts.served)
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("server %s stopped: %v", name, err)
		}
	}()
	n.Own, n.DB, n.Client, n.Ring, n.Engine, n.Fed, n.Remote, n.Delivery = own, db, client, ring, engine, fed, remote, delivery
	n.running = parts
	return nil
}

// stop stops the node if it runs. Graceful: the listener drains, the
// delivery stops, the store closes. Crash: the listener and every
// connection are cut at once, requests in progress fail against a store
// that is closed under them, and the engine's memory is dropped; only
// what the store committed survives, as after kill -9.
func (n *node) stop(crash bool) {
	parts := n.running
	if parts == nil {
		return
	}
	n.running = nil
	n.closeParts(parts, crash)
}

func (n *node) closeParts(parts *runningParts, crash bool) {
	if parts.srv != nil {
		if n.opts.Net != nil {
			// Requests held by a hanging fault end with the listener.
			n.opts.Net.releaseTo(n.Name)
		}
		if crash {
			parts.srv.Close()
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			if err := parts.srv.Shutdown(ctx); err != nil {
				parts.srv.Close()
			}
			cancel()
		}
		<-parts.served
	}
	if parts.delivery != nil {
		parts.delivery.Close()
	}
	if parts.client != nil {
		parts.client.Close()
	}
	if parts.db != nil {
		parts.db.Close()
	}
	// After a crash, requests cut off with their connections fail
	// against the closed store and end.
	parts.handlers.wait()
}

// Restart stops the node (crash or graceful) and starts it again on the
// same data directory and port.
func (n *node) Restart(t *testing.T, crash bool) {
	t.Helper()
	n.stop(crash)
	if err := n.start(t, nil); err != nil {
		t.Fatalf("restart %s: %v", n.Name, err)
	}
}

// hookedRemote is the federation client as the engine's remote, with a
// hook a test may run before each outbound invite.
type hookedRemote struct {
	*federation.Client
	mu           sync.Mutex
	beforeInvite func()
}

// BeforeInvite sets the hook run before each outbound invite (nil: none).
func (r *hookedRemote) BeforeInvite(f func()) {
	r.mu.Lock()
	r.beforeInvite = f
	r.mu.Unlock()
}

func (r *hookedRemote) SendInvite(ctx context.Context, server, roomID, eventID, roomVersion string, event []byte, inviteRoomState [][]byte) ([]byte, error) {
	r.mu.Lock()
	hook := r.beforeInvite
	r.mu.Unlock()
	if hook != nil {
		hook()
	}
	return r.Client.SendInvite(ctx, server, roomID, eventID, roomVersion, event, inviteRoomState)
}

// startNodes starts n servers whose queued events wait for Flush.
func startNodes(t *testing.T, n int) []*node {
	t.Helper()
	out := make([]*node, n)
	for i := range out {
		out[i] = startNode(t)
	}
	return out
}

// startDeliveringNodes starts n servers that deliver what they queue
// themselves.
func startDeliveringNodes(t *testing.T, n int) []*node {
	t.Helper()
	out := make([]*node, n)
	for i := range out {
		out[i] = startNodeWith(t, true)
	}
	return out
}

// startStressNodes starts n delivering servers behind the fault injector
// net, with stressOptions.
func startStressNodes(t *testing.T, net *network, n int) []*node {
	t.Helper()
	out := make([]*node, n)
	for i := range out {
		out[i] = startNodeOpts(t, stressOptions(net))
	}
	return out
}

// clientTransport sends the delivery's transactions with the federation
// client, body as given.
type clientTransport struct{ c *federation.Client }

func (ct clientTransport) SendTransactionBody(ctx context.Context, destination, txnID string, body []byte) (map[string]string, error) {
	raw, err := ct.c.Do(ctx, federation.Request{
		Method: http.MethodPut, Destination: destination,
		Path: "/_matrix/federation/v1/send/" + url.PathEscape(txnID), Body: json.RawMessage(body),
	})
	if err != nil {
		return nil, err
	}
	var answer struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return nil, fmt.Errorf("send to %s: answer: %w", destination, err)
	}
	out := make(map[string]string, len(answer.PDUs))
	for id, r := range answer.PDUs {
		out[id] = r.Error
	}
	return out, nil
}

// User returns the ID of a user of the server.
func (n *node) User(localpart string) string { return "@" + localpart + ":" + n.Name }

// Say sends a message as a local user and returns its event ID.
func (n *node) Say(t *testing.T, roomID, sender, body string) string {
	t.Helper()
	ev, err := n.Engine.SendEvent(testContext(t), roomID, homeserver.LocalEvent{
		Type: "m.room.message", Sender: sender, Content: map[string]any{"msgtype": "m.text", "body": body},
	})
	if err != nil {
		t.Fatalf("%s: send as %s: %v", n.Name, sender, err)
	}
	return ev.EventID()
}

// SetState sends a state event as a local user and returns its event ID.
func (n *node) SetState(t *testing.T, roomID, sender, typ, stateKey string, content map[string]any) string {
	t.Helper()
	ev, err := n.Engine.SendEvent(testContext(t), roomID, homeserver.LocalEvent{
		Type: typ, StateKey: rooms.StringPtr(stateKey), Sender: sender, Content: content,
	})
	if err != nil {
		t.Fatalf("%s: %s as %s: %v", n.Name, typ, sender, err)
	}
	return ev.EventID()
}

// Flush delivers everything the server has queued for other servers, one
// transaction per destination at a time, until its queues are empty, and
// fails the test on a transaction error or a refused PDU. It stands in for
// the outbound sender: it uses the store's queue protocol (peek, begin,
// send, complete) the way a sender does.
func (n *node) Flush(t *testing.T) {
	t.Helper()
	ctx := testContext(t)
	for range 1000 {
		dests, err := n.DB.PendingDestinations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(dests) == 0 {
			return
		}
		for _, dest := range dests {
			n.flushOne(t, ctx, dest)
		}
	}
	t.Fatalf("%s: queues still not empty after 1000 rounds", n.Name)
}

func (n *node) flushOne(t *testing.T, ctx context.Context, dest string) {
	t.Helper()
	pdus, edus, err := n.DB.PeekOutbound(ctx, dest, federation.MaxTransactionPDUs, federation.MaxTransactionEDUs)
	if err != nil {
		t.Fatal(err)
	}
	var positions []int64
	raw := make([]json.RawMessage, 0, len(pdus))
	for _, p := range pdus {
		positions = append(positions, p.Pos)
		raw = append(raw, p.JSON)
	}
	var fedEDUs []federation.EDU
	for _, e := range edus {
		positions = append(positions, e.Pos)
		var edu federation.EDU
		if err := json.Unmarshal(e.JSON, &edu); err != nil {
			t.Fatalf("%s: queued EDU: %v", n.Name, err)
		}
		fedEDUs = append(fedEDUs, edu)
	}
	n.txn++
	txnID := fmt.Sprintf("fedtest%d", n.txn)
	body, err := json.Marshal(map[string]any{"pdus": raw, "edus": fedEDUs})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.DB.BeginTxn(ctx, dest, txnID, body, positions); err != nil {
		t.Fatal(err)
	}
	results, err := n.Client.SendTransaction(ctx, dest, txnID, raw, fedEDUs)
	if err != nil {
		t.Fatalf("%s: transaction to %s: %v", n.Name, dest, err)
	}
	for id, msg := range results {
		if msg != "" {
			t.Errorf("%s: %s refused %s: %s", n.Name, dest, id, msg)
		}
	}
	if err := n.DB.CompleteTxn(ctx, dest); err != nil {
		t.Fatal(err)
	}
}

// WaitEvent waits until the server holds eventID as part of the room
// graph (not an outlier, not rejected), woken by its host log.
func (n *node) WaitEvent(t *testing.T, eventID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testContext(t), waitTimeout)
	defer cancel()
	for {
		head, err := n.DB.HostLogHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		se, err := n.DB.Event(ctx, eventID)
		switch {
		case err == nil && se.Rejected:
			t.Fatalf("%s: event %s was rejected: %s", n.Name, eventID, se.RejectedReason)
		case err == nil && !se.Outlier:
			return
		case err != nil && !errors.Is(err, store.ErrNotFound):
			t.Fatal(err)
		}
		if err := n.DB.WaitHostLog(ctx, head); err != nil {
			t.Fatalf("%s: waiting for %s: %v", n.Name, eventID, err)
		}
	}
}

// CurrentState returns the server's current state of a room.
func (n *node) CurrentState(t *testing.T, roomID string) store.StateMap {
	t.Helper()
	st, err := n.DB.CurrentState(testContext(t), roomID)
	if err != nil {
		t.Fatalf("%s: current state of %s: %v", n.Name, roomID, err)
	}
	return st
}

// requireSameState fails unless every server holds the same current state
// of the room.
func requireSameState(t *testing.T, roomID string, nodes ...*node) {
	t.Helper()
	first := nodes[0].CurrentState(t, roomID)
	for _, n := range nodes[1:] {
		other := n.CurrentState(t, roomID)
		if !maps.Equal(first, other) {
			t.Fatalf("current state of %s differs:\n%s: %s\n%s: %s", roomID, nodes[0].Name, describeState(first), n.Name, describeState(other))
		}
	}
}

func describeState(m store.StateMap) string {
	parts := make([]string, 0, len(m))
	for k, id := range m {
		parts = append(parts, fmt.Sprintf("(%s,%s)=%s", k.Type, k.StateKey, id))
	}
	return strings.Join(parts, " ")
}

// membership returns a user's membership in a server's current state.
func (n *node) membership(t *testing.T, roomID, userID string) string {
	t.Helper()
	ctx := testContext(t)
	id, err := n.DB.CurrentStateEvent(ctx, roomID, store.StateKey{Type: "m.room.member", StateKey: userID})
	if errors.Is(err, store.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	se, err := n.DB.Event(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return se.Event.Membership()
}

// testContext is the test's context, bounded for the harness.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// cluster is the frame of a stress scenario: delivering nodes behind one
// fault injector, the scenario's seeded random source, and per room the
// events the scenario saw acknowledged since the room's baseline, which
// every server must end up holding.
type cluster struct {
	t     *testing.T
	Nodes []*node
	Net   *network
	Rand  *rand.Rand
	Seed  int64

	mu        sync.Mutex
	sent      map[string]map[string]bool // room -> acknowledged event IDs
	baselines map[string]map[string]int64
}

// newCluster starts n stress nodes and the scenario's random source.
func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	rng, seed := scenarioRand(t)
	nw := newNetwork()
	return &cluster{
		t: t, Nodes: startStressNodes(t, nw, n), Net: nw, Rand: rng, Seed: seed,
		sent: map[string]map[string]bool{}, baselines: map[string]map[string]int64{},
	}
}

// Fatalf fails the scenario with its seed in the message.
func (c *cluster) Fatalf(format string, args ...any) {
	c.t.Helper()
	c.t.Fatalf("seed %d: %s", c.Seed, fmt.Sprintf(format, args...))
}

// Send sends a local event and records it when the engine acknowledged
// it.
func (c *cluster) Send(n *node, roomID string, le homeserver.LocalEvent) (*rooms.Event, error) {
	ev, err := n.Engine.SendEvent(testContext(c.t), roomID, le)
	if err != nil {
		return nil, err
	}
	c.Record(roomID, ev.EventID())
	return ev, nil
}

// Record notes an acknowledged event of the room.
func (c *cluster) Record(roomID, eventID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sent[roomID] == nil {
		c.sent[roomID] = map[string]bool{}
	}
	c.sent[roomID][eventID] = true
}

// Say sends a message that must be accepted locally.
func (c *cluster) Say(n *node, roomID, sender, body string) string {
	c.t.Helper()
	ev, err := c.Send(n, roomID, homeserver.LocalEvent{Type: "m.room.message", Sender: sender, Content: map[string]any{"msgtype": "m.text", "body": body}})
	if err != nil {
		c.Fatalf("%s: send as %s: %v", n.Name, sender, err)
	}
	return ev.EventID()
}

// SetState sends a state event that must be accepted locally.
func (c *cluster) SetState(n *node, roomID, sender, typ, stateKey string, content map[string]any) string {
	c.t.Helper()
	ev, err := c.Send(n, roomID, homeserver.LocalEvent{Type: typ, StateKey: rooms.StringPtr(stateKey), Sender: sender, Content: content})
	if err != nil {
		c.Fatalf("%s: %s as %s: %v", n.Name, typ, sender, err)
	}
	return ev.EventID()
}

// Baseline marks the room settled: every node holds what came before,
// and what the convergence checks compare is what comes after (servers
// that joined later never hold the history before their join).
func (c *cluster) Baseline(roomID string) {
	c.t.Helper()
	heads := map[string]int64{}
	for _, n := range c.Nodes {
		head, err := n.DB.HostLogHead(testContext(c.t))
		if err != nil {
			c.Fatalf("%s: host log head: %v", n.Name, err)
		}
		heads[n.Name] = head
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.baselines[roomID] = heads
	delete(c.sent, roomID)
}

// hostEvents returns the event IDs of the room's host log entries after
// the room's baseline on a node, in log order, duplicates kept.
func (c *cluster) hostEvents(n *node, roomID string) []string {
	c.t.Helper()
	c.mu.Lock()
	after := c.baselines[roomID][n.Name]
	c.mu.Unlock()
	ctx := testContext(c.t)
	var out []string
	for {
		recs, err := n.DB.ReadHostLog(ctx, after, 500)
		if err != nil {
			c.Fatalf("%s: read host log: %v", n.Name, err)
		}
		for _, r := range recs {
			if r.Kind == store.HostEvent && r.RoomID == roomID {
				out = append(out, r.EventID)
			}
			after = r.Pos
		}
		if len(recs) < 500 {
			return out
		}
	}
}

// candidates returns every event the room's convergence is judged on:
// the acknowledged sends and every event any host log shows after the
// baseline.
func (c *cluster) candidates(roomID string) []string {
	c.t.Helper()
	set := map[string]bool{}
	c.mu.Lock()
	for id := range c.sent[roomID] {
		set[id] = true
	}
	c.mu.Unlock()
	for _, n := range c.Nodes {
		for _, id := range c.hostEvents(n, roomID) {
			set[id] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// missing returns the first node and event of ids the node does not hold
// in its room graph (absent or an outlier), "" when all hold all.
func (c *cluster) missing(nodes []*node, ids []string) (string, string) {
	c.t.Helper()
	ctx := testContext(c.t)
	for _, n := range nodes {
		evs, err := n.DB.Events(ctx, ids)
		if err != nil {
			c.Fatalf("%s: events: %v", n.Name, err)
		}
		held := map[string]bool{}
		for _, se := range evs {
			if !se.Outlier {
				held[se.Event.EventID()] = true
			}
		}
		for _, id := range ids {
			if !held[id] {
				return n.Name, id
			}
		}
	}
	return "", ""
}

// WaitHeld waits until every node holds every candidate event of the
// room in its graph.
func (c *cluster) WaitHeld(roomID string) {
	c.t.Helper()
	c.WaitAll(func() []string { return c.candidates(roomID) })
}

// WaitAll waits until every node holds every event ids returns in its
// graph. It polls the stores (the events it waits for may be
// soft-failed, which wakes no host log reader), with a deadline.
func (c *cluster) WaitAll(ids func() []string) {
	c.t.Helper()
	c.waitHeldOn(c.Nodes, ids)
}

// WaitOn waits until each of nodes holds every event of ids in its graph.
func (c *cluster) WaitOn(nodes []*node, ids []string) {
	c.t.Helper()
	c.waitHeldOn(nodes, func() []string { return ids })
}

func (c *cluster) waitHeldOn(nodes []*node, ids func() []string) {
	c.t.Helper()
	deadline := time.Now().Add(2 * waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		want := ids()
		server, id := c.missing(nodes, want)
		if server == "" {
			return
		}
		if time.Now().After(deadline) {
			c.Fatalf("%s never got %s (%d events to hold): %s", server, id, len(want), c.describeEvent(id))
		}
		<-tick.C
	}
}

// waitHeldFilling waits until every node holds every candidate event of
// the room in its graph, like WaitHeld, except that it does not wait for
// what cannot come: once no server has anything left to deliver, an
// event a node still lacks lies in a gap it bridged with the state
// before a later event (get_missing_events fetches a bounded number of
// events, which the protocol allows). The node then asks the others for
// that history with /backfill (Engine.BackfillRoom), as its host paging
// back would. It returns, by node name, the events that came by
// backfill: they are timeline events the host log does not show, by
// design.
func (c *cluster) waitHeldFilling(roomID string) map[string]map[string]bool {
	c.t.Helper()
	backfilled := map[string]map[string]bool{}
	for _, n := range c.Nodes {
		backfilled[n.Name] = map[string]bool{}
	}
	deadline := time.Now().Add(2 * waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	quiet := 0
	for {
		ids := c.candidates(roomID)
		lacking := c.lacking(ids)
		if len(lacking) == 0 {
			return backfilled
		}
		if time.Now().After(deadline) {
			for n, missing := range lacking {
				c.Fatalf("%s never got %s (%d events to hold, %d missing there): %s", n.Name, missing[0], len(ids), len(missing), c.describeEvent(missing[0]))
			}
		}
		// Quiet: every queue drained for a while.
		if c.drained() {
			quiet++
		} else {
			quiet = 0
		}
		if quiet >= 10 {
			quiet = 0
			for n, missing := range lacking {
				from := missing[:min(len(missing), 20)]
				if _, err := n.Engine.BackfillRoom(testContext(c.t), roomID, from, homeserver.MaxBackfillLimit); err != nil {
					c.t.Logf("%s: backfill of %d missing events: %v", n.Name, len(missing), err)
				}
				evs, err := n.DB.Events(testContext(c.t), missing)
				if err != nil {
					c.Fatalf("%s: events: %v", n.Name, err)
				}
				for _, se := range evs {
					if !se.Outlier {
						backfilled[n.Name][se.Event.EventID()] = true
					}
				}
			}
		}
		<-tick.C
	}
}

// lacking returns, by node, the events of ids each node does not hold in
// its graph.
func (c *cluster) lacking(ids []string) map[*node][]string {
	c.t.Helper()
	ctx := testContext(c.t)
	out := map[*node][]string{}
	for _, n := range c.Nodes {
		evs, err := n.DB.Events(ctx, ids)
		if err != nil {
			c.Fatalf("%s: events: %v", n.Name, err)
		}
		held := map[string]bool{}
		for _, se := range evs {
			if !se.Outlier {
				held[se.Event.EventID()] = true
			}
		}
		for _, id := range ids {
			if !held[id] {
				out[n] = append(out[n], id)
			}
		}
	}
	return out
}

// drained reports whether no node has anything queued for another.
func (c *cluster) drained() bool {
	c.t.Helper()
	for _, n := range c.Nodes {
		dests, err := n.DB.PendingDestinations(testContext(c.t))
		if err != nil {
			c.Fatalf("%s: pending destinations: %v", n.Name, err)
		}
		if len(dests) > 0 {
			return false
		}
	}
	return true
}

// describeEvent says what each node holds of an event, for failures.
func (c *cluster) describeEvent(id string) string {
	ctx := testContext(c.t)
	var parts []string
	for _, n := range c.Nodes {
		se, err := n.DB.Event(ctx, id)
		switch {
		case err != nil:
			parts = append(parts, fmt.Sprintf("%s: %v", n.Name, err))
		default:
			parts = append(parts, fmt.Sprintf("%s: %s from %s, outlier=%v rejected=%v (%s) soft-failed=%v",
				n.Name, se.Event.Type(), se.Event.Sender(), se.Outlier, se.Rejected, se.RejectedReason, se.SoftFailed))
		}
	}
	return strings.Join(parts, "; ")
}

// Converge checks the room's convergence once the network is healed:
// after each speaker (a local user still joined, by node) has said a
// word, every node holds every acknowledged and every host-visible event
// in its graph, judged the same way (rejected or not) everywhere; after
// one more word, which merges every server's forward extremities, all
// hold the same current state; and each node's host log shows each event
// it accepted exactly once and nothing else (events a node took in by
// backfill excepted: see waitHeldFilling).
func (c *cluster) Converge(roomID string, speakers map[*node]string) convergence {
	c.t.Helper()
	// A server sends an event only to the servers its own state counts
	// in the room, so an event may reach some servers only when a later
	// event names it: each speaker's word pulls what its server holds
	// to the others.
	for _, n := range c.Nodes {
		if sender, ok := speakers[n]; ok {
			c.Say(n, roomID, sender, "settling on "+n.Name)
		}
	}
	backfilled := c.waitHeldFilling(roomID)
	// Every server holds every event: one more word merges the forward
	// extremities everywhere (an event one server soft-failed is no
	// forward extremity there, but is one where it was accepted). Its
	// prev events are held everywhere, so it arrives as an ordinary PDU.
	for _, n := range c.Nodes {
		if sender, ok := speakers[n]; ok {
			c.Say(n, roomID, sender, "settled on "+n.Name)
			for n, ids := range c.waitHeldFilling(roomID) {
				maps.Copy(backfilled[n], ids)
			}
			break
		}
	}
	requireSameState(c.t, roomID, c.Nodes...)

	ids := c.candidates(roomID)
	ctx := testContext(c.t)
	rejected := map[string]string{} // event -> the first node's verdict
	softFailed := 0
	for i, n := range c.Nodes {
		evs, err := n.DB.Events(ctx, ids)
		if err != nil {
			c.Fatalf("%s: events: %v", n.Name, err)
		}
		accepted := map[string]bool{}
		for _, se := range evs {
			id := se.Event.EventID()
			verdict := fmt.Sprintf("rejected=%v", se.Rejected)
			if i == 0 {
				rejected[id] = verdict
			} else if rejected[id] != verdict {
				c.Fatalf("%s judged %s %s, %s judged it %s", n.Name, id, verdict, c.Nodes[0].Name, rejected[id])
			}
			if se.SoftFailed {
				softFailed++
			}
			if !se.Rejected && !se.SoftFailed && !se.Outlier {
				accepted[id] = true
			}
		}
		seen := map[string]bool{}
		for _, id := range c.hostEvents(n, roomID) {
			if seen[id] {
				c.Fatalf("%s: host log shows %s twice", n.Name, id)
			}
			seen[id] = true
			if !accepted[id] {
				c.Fatalf("%s: host log shows %s, which it did not accept", n.Name, id)
			}
		}
		for id := range accepted {
			if !seen[id] && !backfilled[n.Name][id] {
				c.Fatalf("%s: accepted %s but its host log does not show it", n.Name, id)
			}
		}
	}
	filled := 0
	for _, ids := range backfilled {
		filled += len(ids)
	}
	c.t.Logf("room %s converged on %d servers: %d events, %d soft-failed verdicts, %d events backfilled across gaps", roomID, len(c.Nodes), len(ids), softFailed, filled)
	return convergence{Events: len(ids), SoftFailed: softFailed, Backfilled: filled}
}

// convergence sums up a Converge: the events compared, the soft-failed
// verdicts (by event and server), and the events servers took in by
// backfill across gaps.
type convergence struct{ Events, SoftFailed, Backfilled int }
