package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/gorilla/mux"
	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

// roomNode is a federation server with room endpoints on a loopback TLS
// listener: its Server (for the key document and authentication), its
// Client and key ring.
type roomNode struct {
	name   string
	own    *keys.Own
	signer rooms.SigningKey
	client *Client
	ring   *keys.Ring
	srv    *Server
	res    *fakeResolver
	ts     *httptest.Server
}

// newRoomNode prepares a node: keys, resolver, client and ring. start
// serves it with the room handler.
func newRoomNode(t testing.TB, pki *testPKI, name string, seed byte) *roomNode {
	t.Helper()
	own := testKeys(t, seed)
	log := testLogger(t).With().Str("node", name).Logger()
	res := newFakeResolver()
	client, err := NewClient(ClientConfig{ServerName: name, Keys: own, Resolver: res, RootCAs: pki.pool, AllowPrivateAddresses: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	ring, err := keys.NewRing(keys.RingConfig{ServerName: name, Own: own, Fetcher: client})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(name, own)
	srv.Logger = log
	srv.KeyRing = ring
	return &roomNode{name: name, own: own, signer: own.Signer(name), client: client, ring: ring, srv: srv, res: res}
}

// start serves the node's routes and the room routes of h over TLS.
func (n *roomNode) start(t testing.TB, pki *testPKI, h RoomHandler) {
	t.Helper()
	r := mux.NewRouter().SkipClean(true).UseEncodedPath()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeError(w, r, ErrUnrecognized) })
	n.srv.routes(r)
	n.srv.roomRoutes(r, h)
	n.ts = httptest.NewUnstartedServer(n.srv.logRequests(recoverPanics(r)))
	n.ts.TLS = TLSConfig(pki.issue(t, n.name))
	n.ts.StartTLS()
	t.Cleanup(n.ts.Close)
}

// linkNodes lets each node reach the other by name.
func linkNodes(a, b *roomNode) {
	a.res.mapHost(b.name, 8448, netip.MustParseAddrPort(b.ts.Listener.Addr().String()))
	b.res.mapHost(a.name, 8448, netip.MustParseAddrPort(a.ts.Listener.Addr().String()))
}

// ferryNode is a Ferry server under test: a real engine over a store in
// the test's directory behind a real federation server.
type ferryNode struct {
	*roomNode
	db     *store.DB
	engine *homeserver.Engine
}

func startFerry(t testing.TB, pki *testPKI, name string) *ferryNode {
	t.Helper()
	n := newRoomNode(t, pki, name, 41)
	db := storetest.Open(t)
	eng := &homeserver.Engine{
		ServerName: name, Signer: n.signer, Store: db, Keys: n.ring, Remote: n.client,
		Logger: testLogger(t).With().Str("node", name).Str("part", "engine").Logger(),
	}
	n.start(t, pki, eng)
	return &ferryNode{roomNode: n, db: db, engine: eng}
}

// scriptedRooms is the RoomHandler of a scripted remote server: it serves
// the events it was given and records what it was asked.
type scriptedRooms struct {
	mu      sync.Mutex
	events  map[string]*rooms.Event
	missing [][]byte // the answer to /get_missing_events
	// stateIDs and chainIDs answer /state_ids when stateIDs is set.
	stateIDs, chainIDs []string
	asked              []string // endpoints asked, in order
}

func newScriptedRooms() *scriptedRooms {
	return &scriptedRooms{events: map[string]*rooms.Event{}}
}

func (s *scriptedRooms) add(evs ...*rooms.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range evs {
		s.events[ev.EventID()] = ev
	}
}

func (s *scriptedRooms) record(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, what)
}

func (s *scriptedRooms) askedFor(what string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.asked {
		if a == what {
			n++
		}
	}
	return n
}

var errScriptedNotFound = &scriptedError{"not served by the scripted remote"}

type scriptedError struct{ msg string }

func (e *scriptedError) Error() string  { return e.msg }
func (e *scriptedError) NotFound() bool { return true }

func (s *scriptedRooms) TransactionResponse(context.Context, string, string) ([]byte, bool, error) {
	return nil, false, nil
}

func (s *scriptedRooms) StoreTransactionResponse(context.Context, string, string, []byte) error {
	return nil
}

func (s *scriptedRooms) ReceivePDUs(_ context.Context, _ string, pdus [][]byte) map[string]error {
	s.record("send")
	return map[string]error{}
}

func (s *scriptedRooms) ReceiveEDU(context.Context, string, string, []byte) error { return nil }

func (s *scriptedRooms) Event(_ context.Context, _ string, eventID string) ([]byte, error) {
	s.record("event")
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev, ok := s.events[eventID]; ok {
		return ev.JSON(), nil
	}
	return nil, errScriptedNotFound
}

func (s *scriptedRooms) StateIDs(context.Context, string, string, string) ([]string, []string, error) {
	s.record("state_ids")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stateIDs == nil {
		return nil, nil, errScriptedNotFound
	}
	return s.stateIDs, s.chainIDs, nil
}

func (s *scriptedRooms) State(context.Context, string, string, string) ([][]byte, [][]byte, error) {
	return nil, nil, errScriptedNotFound
}

func (s *scriptedRooms) EventAuth(context.Context, string, string, string) ([][]byte, error) {
	return nil, errScriptedNotFound
}

func (s *scriptedRooms) Backfill(context.Context, string, string, []string, int) ([][]byte, error) {
	return nil, errScriptedNotFound
}

func (s *scriptedRooms) TimestampToEvent(context.Context, string, string, int64, bool) (string, int64, error) {
	return "", 0, errScriptedNotFound
}

func (s *scriptedRooms) MissingEvents(context.Context, string, string, []string, []string, int, int64) ([][]byte, error) {
	s.record("get_missing_events")
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.missing, nil
}

var (
	_ RoomHandler       = (*scriptedRooms)(nil)
	_ RoomHandler       = (*homeserver.Engine)(nil)
	_ homeserver.Remote = (*Client)(nil)
)

// remoteRoom is the scripted remote's view of one room: what it knows of
// the room's events and state, to build events the way a real server
// would.
type remoteRoom struct {
	t      testing.TB
	v      rooms.Version
	roomID string
	node   *roomNode
	ferry  *ferryNode
	state  map[rooms.StateTuple]*rooms.Event
	events map[string]*rooms.Event
	ts     int64
}

// newRemoteRoom loads the room's current state from Ferry's store: what a
// remote learns from make_join / send_join in a real join.
func newRemoteRoom(t testing.TB, node *roomNode, ferry *ferryNode, roomID string) *remoteRoom {
	t.Helper()
	ctx := context.Background()
	room, err := ferry.db.Room(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	v, err := rooms.LookupVersion(room.Version)
	if err != nil {
		t.Fatal(err)
	}
	rr := &remoteRoom{t: t, v: v, roomID: roomID, node: node, ferry: ferry, state: map[rooms.StateTuple]*rooms.Event{}, events: map[string]*rooms.Event{}, ts: 1_700_000_000_000}
	rr.syncState()
	return rr
}

// syncState reloads the current state from Ferry's store.
func (rr *remoteRoom) syncState() {
	rr.t.Helper()
	ctx := context.Background()
	cur, err := rr.ferry.db.CurrentState(ctx, rr.roomID)
	if err != nil {
		rr.t.Fatal(err)
	}
	rr.state = map[rooms.StateTuple]*rooms.Event{}
	for k, id := range cur {
		se, err := rr.ferry.db.Event(ctx, id)
		if err != nil {
			rr.t.Fatal(err)
		}
		rr.state[rooms.StateTuple(k)] = se.Event
		rr.events[id] = se.Event
	}
}

// extremities returns Ferry's forward extremities.
func (rr *remoteRoom) extremities() []string {
	rr.t.Helper()
	ext, err := rr.ferry.db.ForwardExtremities(context.Background(), rr.roomID)
	if err != nil {
		rr.t.Fatal(err)
	}
	return ext
}

// eventSpec is an event the remote builds.
type eventSpec struct {
	typ        string
	stateKey   *string
	sender     string
	content    map[string]any
	prev       []string // Ferry's extremities when nil
	authEvents []string // chosen from the state when nil
}

// build builds and signs an event with the remote's key. It does not
// change the remote's state: apply does, once Ferry accepted it.
func (rr *remoteRoom) build(s eventSpec) *rooms.Event {
	rr.t.Helper()
	prev := s.prev
	if prev == nil {
		prev = rr.extremities()
	}
	var depth int64
	for _, id := range prev {
		if ev := rr.lookup(id); ev != nil {
			depth = max(depth, ev.Depth())
		}
	}
	rr.ts++
	tmpl := rooms.EventTemplate{
		Type: s.typ, StateKey: s.stateKey, Sender: s.sender, RoomID: rr.roomID, Content: s.content,
		PrevEvents: prev, Depth: depth + 1, OriginServerTS: rr.ts,
	}
	tmpl.AuthEvents = s.authEvents
	if tmpl.AuthEvents == nil {
		for _, k := range rooms.AuthSelectionFor(rr.v, tmpl) {
			if ev := rr.state[k]; ev != nil {
				tmpl.AuthEvents = append(tmpl.AuthEvents, ev.EventID())
			}
		}
	}
	ev, err := rooms.BuildEvent(rr.v, tmpl, rr.node.signer)
	if err != nil {
		rr.t.Fatal(err)
	}
	rr.events[ev.EventID()] = ev
	return ev
}

// lookup finds an event the remote built or loaded, or Ferry holds.
func (rr *remoteRoom) lookup(id string) *rooms.Event {
	if ev, ok := rr.events[id]; ok {
		return ev
	}
	se, err := rr.ferry.db.Event(context.Background(), id)
	if err != nil {
		return nil
	}
	return se.Event
}

// apply records an accepted state event in the remote's state.
func (rr *remoteRoom) apply(ev *rooms.Event) {
	if k, ok := rooms.StateTupleOf(ev); ok {
		rr.state[k] = ev
	}
}

// send sends PDUs in one transaction and returns the per-PDU answer.
func (rr *remoteRoom) send(txnID string, evs ...*rooms.Event) map[string]string {
	rr.t.Helper()
	pdus := make([]json.RawMessage, len(evs))
	for i, ev := range evs {
		pdus[i] = ev.JSON()
	}
	res, err := rr.node.client.SendTransaction(context.Background(), rr.ferry.name, txnID, pdus, nil)
	if err != nil {
		rr.t.Fatalf("send %s: %v", txnID, err)
	}
	return res
}

// stored reads an event's record from Ferry's store.
func (f *ferryNode) stored(t *testing.T, id string) *store.StoredEvent {
	t.Helper()
	se, err := f.db.Event(context.Background(), id)
	if err != nil {
		t.Fatalf("event %s: %v", id, err)
	}
	return se
}

// hostLogEvents returns the event IDs in Ferry's host log.
func (f *ferryNode) hostLogEvents(t *testing.T) []string {
	t.Helper()
	recs, err := f.db.ReadHostLog(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		if r.Kind == store.HostEvent {
			out = append(out, r.EventID)
		}
	}
	return out
}

// hostLogKinds returns the payloads of Ferry's host log entries of a kind.
func (f *ferryNode) hostLogPayloads(t *testing.T, kind string) []string {
	t.Helper()
	recs, err := f.db.ReadHostLog(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range recs {
		if r.Kind == kind {
			out = append(out, string(r.Payload))
		}
	}
	return out
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// testLogger logs into the test's output; benchmarks log at the info
// level, as a server does by default, so that debug lines formatted for
// every event do not weigh on what they measure.
func testLogger(t testing.TB) zerolog.Logger {
	log := zerolog.New(zerolog.NewTestWriter(t))
	if _, ok := t.(*testing.B); ok {
		log = log.Level(zerolog.InfoLevel)
	}
	return log
}
