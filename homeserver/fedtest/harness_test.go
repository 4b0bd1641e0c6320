// Package fedtest runs several real Ferry servers in one test process,
// each with its own server name (127.0.0.1:port), signing key, SQLite
// database and TLS listener, federating over loopback. The package holds
// only test files: it imports both federation and homeserver, which the
// import rules let no library package do.
package fedtest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
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
// first, so the server name can name its port.
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

	txn int
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
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	name := ln.Addr().String()
	dir := t.TempDir()
	log := testLogger(t, name)

	own, _, err := keys.LoadOrGenerate(dir, rand.Reader)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	dbLog := log.With().Str("component", "store").Logger()
	db, err := store.Open(ctx, filepath.Join(dir, "ferry.db"), store.Options{Logger: &dbLog, Synchronous: "NORMAL"})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	client, err := federation.NewClient(federation.ClientConfig{
		ServerName:            name,
		Keys:                  own,
		InsecureSkipVerify:    true,
		AllowPrivateAddresses: true,
		Logger:                log.With().Str("component", "federation_client").Logger(),
	})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	ring, err := keys.NewRing(keys.RingConfig{ServerName: name, Own: own, Fetcher: client, Cache: db})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	remote := &hookedRemote{Client: client}
	engine := &homeserver.Engine{
		ServerName: name,
		Signer:     own.Signer(name),
		Store:      db,
		Keys:       ring,
		Remote:     remote,
		Logger:     log.With().Str("component", "engine").Logger(),
	}
	if delivering {
		d := &homeserver.Delivery{ServerName: name, Store: db, Transport: clientTransport{client}, Logger: log.With().Str("component", "delivery").Logger()}
		if err := d.Start(context.Background()); err != nil {
			ln.Close()
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		engine.OnQueued = func(dests []string) { d.Notify(dests...) }
	}
	fed := federation.NewServer(name, own)
	fed.KeyRing = ring
	fed.Rooms = engine
	fed.Directory = engine
	fed.Logger = log.With().Str("component", "federation").Logger()

	cert, _, err := federation.LoadOrCreateSelfSigned(dir, name, time.Now())
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	srv := &http.Server{Handler: fed.Handler(), TLSConfig: federation.TLSConfig(cert), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("server %s stopped: %v", name, err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		<-done
	})
	return &node{Name: name, Own: own, DB: db, Client: client, Ring: ring, Engine: engine, Fed: fed, Remote: remote}
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
