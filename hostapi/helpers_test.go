package hostapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/hostapi"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
	"github.com/ferry-matrix/ferry/store"
)

const (
	ourName   = "hs.test"
	testToken = "test-token-0123456789"
	alice     = "@alice:hs.test"
	bob       = "@bob:hs.test"
	carol     = "@carol:hs.test"
)

// testKeys verifies signatures with roomstest's deterministic keys.
type testKeys struct{}

func (testKeys) KeyLookup(context.Context) rooms.KeyLookup { return roomstest.Keys{} }

// node is one whole server on a data directory: store, engine, host and
// host API listening on 127.0.0.1.
type node struct {
	t    testing.TB
	dir  string
	db   *store.DB
	host *homeserver.Host
	srv  *hostapi.Server
	url  string
	// closed is set once close ran; dbClosed when a test closed the
	// store itself.
	closed, dbClosed bool
}

// openNode opens the server on dir, listening on listen ("127.0.0.1:0"
// for any port). configure, when set, adjusts the config before New.
func openNode(t testing.TB, dir, listen string, configure func(*hostapi.Config)) *node {
	t.Helper()
	db, err := store.Open(context.Background(), filepath.Join(dir, "ferry.db"), store.Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	logger := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	engine := &homeserver.Engine{
		ServerName: ourName,
		Signer:     roomstest.Key(ourName),
		Store:      db,
		Keys:       testKeys{},
		Logger:     logger.With().Str("component", "engine").Logger(),
	}
	host := &homeserver.Host{Engine: engine}
	cfg := hostapi.Config{
		Host:       host,
		Cursors:    db,
		Token:      testToken,
		ServerName: ourName,
		Logger:     logger.With().Str("component", "hostapi").Logger(),
		Extra: map[string]http.Handler{
			"/healthz": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		},
	}
	if configure != nil {
		configure(&cfg)
	}
	srv, err := hostapi.New(cfg)
	if err != nil {
		db.Close()
		t.Fatalf("hostapi.New: %v", err)
	}
	if err := srv.Open(listen); err != nil {
		db.Close()
		t.Fatalf("open: %v", err)
	}
	n := &node{t: t, dir: dir, db: db, host: host, srv: srv, url: srv.URL()}
	t.Cleanup(n.close)
	return n
}

// newNode opens a server on a fresh data directory.
func newNode(t testing.TB) *node {
	t.Helper()
	return openNode(t, t.TempDir(), "127.0.0.1:0", nil)
}

// on returns a copy of n reporting to t, for subtests.
func (n *node) on(t testing.TB) *node {
	c := *n
	c.t = t
	return &c
}

// close stops the server, then the store, as the serve command does.
func (n *node) close() {
	if n.closed {
		return
	}
	n.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.srv.Close(ctx); err != nil {
		n.t.Errorf("close server: %v", err)
	}
	if n.dbClosed {
		return
	}
	if err := n.db.Close(); err != nil {
		n.t.Errorf("close store: %v", err)
	}
}

// response is an answer of the host API.
type response struct {
	status int
	body   []byte
}

// json decodes the body into v.
func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// field returns a top-level string field of a JSON object body.
func (r response) field(t testing.TB, name string) string {
	t.Helper()
	var m map[string]any
	r.json(t, &m)
	s, _ := m[name].(string)
	return s
}

// errcode returns the Matrix errcode of an error body.
func (r response) errcode(t testing.TB) string {
	t.Helper()
	return r.field(t, "errcode")
}

// request sends one request with the test token. body is JSON-encoded
// unless it is a string or []byte, sent as is.
func (n *node) request(method, path string, body any) response {
	n.t.Helper()
	return n.requestWith(method, path, body, http.Header{"Authorization": {"Bearer " + testToken}})
}

func (n *node) requestWith(method, path string, body any, header http.Header) response {
	n.t.Helper()
	var reader io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		reader = strings.NewReader(b)
	case []byte:
		reader = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			n.t.Fatal(err)
		}
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, n.url+path, reader)
	if err != nil {
		n.t.Fatal(err)
	}
	req.Header = header.Clone()
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return response{status: resp.StatusCode, body: data}
}

// must sends a request that must answer 200 and returns the answer.
func (n *node) must(method, path string, body any) response {
	n.t.Helper()
	r := n.request(method, path, body)
	if r.status != http.StatusOK {
		n.t.Fatalf("%s %s: status %d: %s", method, path, r.status, r.body)
	}
	return r
}

// esc escapes an ID as one path segment.
func esc(id string) string { return url.PathEscape(id) }

// register registers local users.
func (n *node) register(users ...string) {
	n.t.Helper()
	for _, u := range users {
		n.must(http.MethodPut, "/_ferry/v1/users/"+esc(u), map[string]any{})
	}
}

// createRoom creates a room as creator with extra fields, returning its
// ID.
func (n *node) createRoom(creator string, fields map[string]any) string {
	n.t.Helper()
	body := map[string]any{"creator": creator}
	for k, v := range fields {
		body[k] = v
	}
	id := n.must(http.MethodPost, "/_ferry/v1/rooms", body).field(n.t, "room_id")
	if id == "" {
		n.t.Fatal("create room: no room_id")
	}
	return id
}

// send sends an m.room.message as sender and returns its event ID.
func (n *node) send(roomID, sender, text, txnID string) string {
	n.t.Helper()
	body := map[string]any{"sender": sender, "type": "m.room.message", "content": map[string]any{"msgtype": "m.text", "body": text}}
	if txnID != "" {
		body["txn_id"] = txnID
	}
	return n.must(http.MethodPost, "/_ferry/v1/rooms/"+esc(roomID)+"/send", body).field(n.t, "event_id")
}

// snapshot is what a refused request must leave unchanged: the host log,
// the users, the rooms with their members, and the aliases tested.
type snapshot struct {
	head    int64
	users   []homeserver.User
	rooms   []homeserver.RoomSummary
	state   map[string]int
	aliases map[string]string
}

func (n *node) snapshot(aliases ...string) snapshot {
	n.t.Helper()
	ctx := context.Background()
	head, err := n.db.HostLogHead(ctx)
	if err != nil {
		n.t.Fatal(err)
	}
	users, err := n.host.Users(ctx)
	if err != nil {
		n.t.Fatal(err)
	}
	list, err := n.host.Rooms(ctx)
	if err != nil {
		n.t.Fatal(err)
	}
	state := map[string]int{}
	for _, r := range list {
		evs, err := n.host.State(ctx, r.RoomID)
		if err != nil {
			n.t.Fatal(err)
		}
		state[r.RoomID] = len(evs)
	}
	al := map[string]string{}
	for _, a := range aliases {
		if id, _, err := n.host.Alias(ctx, a); err == nil {
			al[a] = id
		}
	}
	return snapshot{head: head, users: users, rooms: list, state: state, aliases: al}
}

func (s snapshot) equal(o snapshot) bool {
	if s.head != o.head || !slices.Equal(s.users, o.users) || len(s.rooms) != len(o.rooms) || len(s.state) != len(o.state) || len(s.aliases) != len(o.aliases) {
		return false
	}
	for i := range s.rooms {
		a, b := s.rooms[i], o.rooms[i]
		if a.RoomID != b.RoomID || a.Name != b.Name || a.Topic != b.Topic || a.JoinedMembers != b.JoinedMembers || !slices.Equal(a.JoinedLocalUsers, b.JoinedLocalUsers) {
			return false
		}
	}
	for k, v := range s.state {
		if o.state[k] != v {
			return false
		}
	}
	for k, v := range s.aliases {
		if o.aliases[k] != v {
			return false
		}
	}
	return true
}

// streamItem is an item of the event stream as the host reads it.
type streamItem struct {
	Pos    string          `json:"pos"`
	Kind   string          `json:"kind"`
	RoomID string          `json:"room_id"`
	Event  json.RawMessage `json:"event"`
	EDU    json.RawMessage `json:"edu"`
}

// eventField reads a string field of the item's event.
func (it streamItem) eventField(t testing.TB, path ...string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(it.Event, &v); err != nil {
		t.Fatalf("item %s: event: %v", it.Pos, err)
	}
	for _, p := range path {
		m, _ := v.(map[string]any)
		v = m[p]
	}
	s, _ := v.(string)
	return s
}

type eventsPage struct {
	Next  string       `json:"next"`
	Items []streamItem `json:"items"`
}

// poll reads the stream after since.
func (n *node) poll(since string, timeoutMS int) eventsPage {
	n.t.Helper()
	var page eventsPage
	n.must(http.MethodGet, "/_ferry/v1/events?since="+since+"&timeout_ms="+strconv.Itoa(timeoutMS)+"&limit=1000", nil).json(n.t, &page)
	return page
}
