package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
)

// memDirectory is an in-memory Directory for tests.
type memDirectory struct {
	mu       sync.Mutex
	profiles map[string]map[string]any
	aliases  map[string]DirectoryEntry
}

func (d *memDirectory) Profile(_ context.Context, userID, _ string) (map[string]any, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.profiles[userID]
	if !ok {
		return nil, ErrNotFound
	}
	return p, nil
}

func (d *memDirectory) ResolveAlias(_ context.Context, alias string) (string, []string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.aliases[alias]
	if !ok {
		return "", nil, ErrNotFound
	}
	return e.RoomID, e.Servers, nil
}

// fedNode is one Ferry federation server in a test: a real Server on a
// loopback TLS listener, its Client and its key ring.
type fedNode struct {
	name     string
	own      *keys.Own
	server   *Server
	client   *Client
	ring     *keys.Ring
	resolver *fakeResolver
	dir      *memDirectory
}

// fedWorld is a set of nodes that can reach each other by name.
type fedWorld struct {
	t     *testing.T
	pki   *testPKI
	nodes map[string]*fedNode
	seed  byte
}

func newFedWorld(t *testing.T) *fedWorld {
	return &fedWorld{t: t, pki: newTestPKI(t), nodes: map[string]*fedNode{}, seed: 10}
}

type nodeOptions struct {
	policy   ServerPolicy
	notaries []keys.Notary
	now      func() time.Time // the server's clock (its key document)
	maxBody  int64
}

// start opens a node named name. Every node already running learns how to
// reach it and it learns how to reach them.
func (w *fedWorld) start(name string, opts nodeOptions) *fedNode {
	t := w.t
	t.Helper()
	w.seed++
	own := testKeys(t, w.seed)
	log := zerolog.New(zerolog.NewTestWriter(t)).With().Str("node", name).Logger()
	res := newFakeResolver()
	client, err := NewClient(ClientConfig{
		ServerName: name, Keys: own, Resolver: res, RootCAs: w.pki.pool,
		AllowPrivateAddresses: true, Policy: opts.policy, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	ring, err := keys.NewRing(keys.RingConfig{ServerName: name, Own: own, Fetcher: client, Notaries: opts.notaries})
	if err != nil {
		t.Fatal(err)
	}
	dir := &memDirectory{profiles: map[string]map[string]any{}, aliases: map[string]DirectoryEntry{}}
	srv := NewServer(name, own)
	srv.Addr = "127.0.0.1:0"
	srv.TLSConfig = TLSConfig(w.pki.issue(t, name))
	srv.Logger = log
	srv.KeyRing = ring
	srv.Policy = opts.policy
	srv.Directory = dir
	srv.MaxRequestBodyBytes = opts.maxBody
	if opts.now != nil {
		srv.Now = opts.now
	}
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close(context.Background()) })
	n := &fedNode{name: name, own: own, server: srv, client: client, ring: ring, resolver: res, dir: dir}
	for _, other := range w.nodes {
		w.link(n, other)
		w.link(other, n)
	}
	w.nodes[name] = n
	return n
}

// link lets from reach to by name (its federation port, 8448).
func (w *fedWorld) link(from, to *fedNode) {
	from.resolver.mapHost(to.name, 8448, to.addr())
}

func (n *fedNode) addr() netip.AddrPort {
	return netip.MustParseAddrPort(n.server.ListenAddr().String())
}

// rawRequest sends a request straight to node with the given
// Authorization header (none when empty) and returns status and body.
func (w *fedWorld) rawRequest(node *fedNode, method, uri string, body []byte, auth ...string) (int, map[string]any) {
	t := w.t
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: w.pki.pool, ServerName: node.name},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, node.server.ListenAddr().String())
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(method, "https://"+node.name+uri, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = ""
	for _, a := range auth {
		req.Header.Add("Authorization", a)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func signedHeader(t testing.TB, key rooms.SigningKey, destination, method, uri string, body []byte) string {
	t.Helper()
	var content any
	if body != nil {
		var err error
		if content, err = rooms.ParseJSON(body); err != nil {
			t.Fatal(err)
		}
	}
	x, err := SignRequest(key, destination, method, uri, content)
	if err != nil {
		t.Fatal(err)
	}
	return x.String()
}

// TestTwoServers_KeysAndQueries: two Ferry servers on loopback fetch each
// other's keys and one queries the other's profile and alias over
// authenticated federation.
func TestTwoServers_KeysAndQueries(t *testing.T) {
	w := newFedWorld(t)
	a := w.start("a.test", nodeOptions{})
	b := w.start("b.test", nodeOptions{})
	b.dir.profiles["@bob:b.test"] = map[string]any{"displayname": "Bob", "avatar_url": "mxc://b.test/face"}
	b.dir.aliases["#lobby:b.test"] = DirectoryEntry{RoomID: "!lobby:b.test", Servers: []string{"b.test", "a.test"}}
	ctx := context.Background()

	// Each fetches the other's keys directly.
	pub, err := a.ring.RequestKey(ctx, "b.test", b.own.Current[0].KeyID())
	if err != nil || !pub.Equal(b.own.Current[0].Public()) {
		t.Fatalf("a fetching b's key: %v", err)
	}
	pub, err = b.ring.RequestKey(ctx, "a.test", a.own.Current[0].KeyID())
	if err != nil || !pub.Equal(a.own.Current[0].Public()) {
		t.Fatalf("b fetching a's key: %v", err)
	}
	stored, _ := a.ring.ServerKeys(ctx, "b.test")
	if len(stored) != 1 || stored[0].Source != keys.SourceDirect {
		t.Fatalf("a's record of b's keys: %+v", stored)
	}

	profile, err := a.client.QueryProfile(ctx, "@bob:b.test", "")
	if err != nil {
		t.Fatal(err)
	}
	if profile["displayname"] != "Bob" || profile["avatar_url"] != "mxc://b.test/face" {
		t.Fatalf("profile = %v", profile)
	}
	profile, err = a.client.QueryProfile(ctx, "@bob:b.test", "displayname")
	if err != nil || len(profile) != 1 || profile["displayname"] != "Bob" {
		t.Fatalf("profile field = %v, %v", profile, err)
	}
	entry, err := a.client.QueryDirectory(ctx, "#lobby:b.test")
	if err != nil {
		t.Fatal(err)
	}
	if entry.RoomID != "!lobby:b.test" || strings.Join(entry.Servers, ",") != "b.test,a.test" {
		t.Fatalf("directory = %+v", entry)
	}

	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"unknown user", func() error { _, err := a.client.QueryProfile(ctx, "@nobody:b.test", ""); return err }},
		{"user of another server", func() error {
			_, err := a.client.Do(ctx, Request{Method: http.MethodGet, Destination: "b.test", Path: "/_matrix/federation/v1/query/profile",
				Query: url.Values{"user_id": {"@carol:a.test"}}})
			return err
		}},
		{"unknown alias", func() error { _, err := a.client.QueryDirectory(ctx, "#nowhere:b.test"); return err }},
	} {
		var herr *HTTPError
		if err := tc.call(); !errors.As(err, &herr) || herr.Status != http.StatusNotFound || herr.ErrCode != "M_NOT_FOUND" {
			t.Errorf("%s: got %v, want 404 M_NOT_FOUND", tc.name, err)
		}
	}
}

// TestAuth_Refusals: requests with a wrong signature, a wrong
// destination, an expired key, an unknown origin or a header replayed
// against another URI get 401; a denied server gets 403.
func TestAuth_Refusals(t *testing.T) {
	w := newFedWorld(t)
	a := w.start("a.test", nodeOptions{})
	b := w.start("b.test", nodeOptions{})
	// e.test's clock is a month behind, so the key document it serves
	// expired long ago.
	monthAgo := time.Now().Add(-30 * 24 * time.Hour)
	e := w.start("e.test", nodeOptions{now: func() time.Time { return monthAgo }})
	strict := w.start("strict.test", nodeOptions{policy: ServerPolicy{Deny: []string{"a.test"}}})
	b.dir.profiles["@bob:b.test"] = map[string]any{"displayname": "Bob"}
	strict.dir.profiles["@s:strict.test"] = map[string]any{"displayname": "S"}

	aKey := a.own.Signer("a.test")
	const profileURI = "/_matrix/federation/v1/query/profile?user_id=%40bob%3Ab.test"
	const directoryURI = "/_matrix/federation/v1/query/directory?room_alias=%23lobby%3Ab.test"

	// The sanity case: a correct header is accepted, also without
	// destination (older senders).
	if status, body := w.rawRequest(b, "GET", profileURI, nil, signedHeader(t, aKey, "b.test", "GET", profileURI, nil)); status != 200 {
		t.Fatalf("valid request: %d %v", status, body)
	}
	noDest, _ := SignRequest(aKey, "b.test", "GET", profileURI, nil)
	noDest.Destination = ""
	if status, body := w.rawRequest(b, "GET", profileURI, nil, noDest.String()); status != 200 {
		t.Fatalf("valid request without destination: %d %v", status, body)
	}

	_, otherPriv, _ := ed25519.GenerateKey(nil)
	forged := rooms.SigningKey{ServerName: "a.test", KeyID: aKey.KeyID, Private: otherPriv}
	_, ghostPriv, _ := ed25519.GenerateKey(nil)
	ghost := rooms.SigningKey{ServerName: "ghost.test", KeyID: "ed25519:g", Private: ghostPriv}
	eKey := e.own.Signer("e.test")

	cases := []struct {
		name    string
		node    *fedNode
		uri     string
		headers []string
		status  int
		code    string
		message string
	}{
		{"missing header", b, profileURI, nil, 401, "M_UNAUTHORIZED", "missing X-Matrix"},
		{"malformed header", b, profileURI, []string{`X-Matrix origin="a.test",key="ed25519:x"`}, 401, "M_UNAUTHORIZED", "missing sig"},
		{"wrong signature", b, profileURI, []string{signedHeader(t, forged, "b.test", "GET", profileURI, nil)}, 401, "M_UNAUTHORIZED", "does not verify"},
		{"wrong destination", b, profileURI, []string{signedHeader(t, aKey, "c.test", "GET", profileURI, nil)}, 401, "M_UNAUTHORIZED", "destination"},
		{"expired key", b, profileURI, []string{signedHeader(t, eKey, "b.test", "GET", profileURI, nil)}, 401, "M_UNAUTHORIZED", "expired"},
		{"unknown origin", b, profileURI, []string{signedHeader(t, ghost, "b.test", "GET", profileURI, nil)}, 401, "M_UNAUTHORIZED", "unknown key"},
		{"header replayed against another URI", b, directoryURI, []string{signedHeader(t, aKey, "b.test", "GET", profileURI, nil)}, 401, "M_UNAUTHORIZED", "does not verify"},
		{"denied server", strict, "/_matrix/federation/v1/query/profile?user_id=%40s%3Astrict.test",
			[]string{signedHeader(t, aKey, "strict.test", "GET", "/_matrix/federation/v1/query/profile?user_id=%40s%3Astrict.test", nil)}, 403, "M_FORBIDDEN", "not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := w.rawRequest(tc.node, "GET", tc.uri, nil, tc.headers...)
			msg, _ := body["error"].(string)
			if status != tc.status || body["errcode"] != tc.code || !strings.Contains(msg, tc.message) {
				t.Fatalf("got %d %v, want %d %s mentioning %q", status, body, tc.status, tc.code, tc.message)
			}
		})
	}

	// The denial applies outbound too: strict.test sends nothing to a.test.
	if _, err := strict.client.QueryProfile(context.Background(), "@x:a.test", ""); !errors.Is(err, ErrServerDenied) {
		t.Fatalf("outbound to a denied server: %v", err)
	}
}

// TestNotary: server A fetches server C's keys through server B's notary
// endpoint (A cannot reach C itself), and rejects a notary answer whose
// notary signature is wrong.
func TestNotary(t *testing.T) {
	w := newFedWorld(t)
	b := w.start("b.test", nodeOptions{})
	c := w.start("c.test", nodeOptions{})
	a := w.start("a.test", nodeOptions{notaries: []keys.Notary{{ServerName: "b.test"}}})
	// A cannot reach C directly.
	delete(a.resolver.hosts, "c.test:8448")
	ctx := context.Background()
	cKeyID := c.own.Current[0].KeyID()

	pub, err := a.ring.RequestKey(ctx, "c.test", cKeyID)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(c.own.Current[0].Public()) {
		t.Fatal("wrong key through the notary")
	}
	stored, _ := a.ring.ServerKeys(ctx, "c.test")
	if len(stored) != 1 || stored[0].Source != "notary:b.test" {
		t.Fatalf("a's record of c's keys: %+v", stored)
	}

	// B's GET endpoint, with minimum_valid_until_ts, signed by B and C.
	raw, err := a.client.Do(ctx, Request{Method: http.MethodGet, Destination: "b.test",
		Path: "/_matrix/key/v2/query/c.test", Query: url.Values{"minimum_valid_until_ts": {"1"}}, Unauthenticated: true})
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := json.Unmarshal(raw, &resp); err != nil || len(resp.ServerKeys) != 1 {
		t.Fatalf("GET query: %s, %v", raw, err)
	}
	doc, err := keys.ParseServerKeys(resp.ServerKeys[0], "c.test", time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	if err := rooms.VerifyJSONSignature(doc.Object, "b.test", b.own.Current[0].KeyID(), b.own.Current[0].Public()); err != nil {
		t.Fatalf("notary signature: %v", err)
	}

	// Bad requests to the notary.
	for _, tc := range []struct{ method, uri, body string }{
		{"GET", "/_matrix/key/v2/query/bad%20name", ""},
		{"GET", "/_matrix/key/v2/query/c.test?minimum_valid_until_ts=soon", ""},
		{"POST", "/_matrix/key/v2/query", `{"server_keys": []}`},
		{"POST", "/_matrix/key/v2/query", `{"server_keys": {"c.test": {"ed25519:x": {"minimum_valid_until_ts": "x"}}}}`},
	} {
		if status, body := w.rawRequest(b, tc.method, tc.uri, []byte(tc.body)); status != 400 {
			t.Errorf("%s %s %s: %d %v, want 400", tc.method, tc.uri, tc.body, status, body)
		}
	}
	if status, body := w.rawRequest(b, "POST", "/_matrix/key/v2/query", []byte(`{"server_keys": {}}`)); status != 200 || len(body["server_keys"].([]any)) != 0 {
		t.Errorf("empty query: %d %v", status, body)
	}

	// A notary that signs with a key that is not its own is not believed.
	// evil.test publishes its real key but signs notary answers with
	// another one under that key's ID.
	evilOwn := testKeys(t, 99)
	evilKeyID := evilOwn.Current[0].KeyID()
	_, wrongPriv, _ := ed25519.GenerateKey(nil)
	evil := startTLSTarget(t, w.pki, "evil", "127.0.0.1:0", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/_matrix/key/v2/server":
			doc, err := keys.ServerKeyDocument("evil.test", evilOwn, time.Now().Add(time.Hour).UnixMilli())
			if err != nil {
				t.Error(err)
			}
			writeRawJSON(rw, 200, doc)
		case "/_matrix/key/v2/query":
			cDoc, err := keys.ServerKeyDocument("c.test", c.own, time.Now().Add(time.Hour).UnixMilli())
			if err != nil {
				t.Error(err)
			}
			signed, err := rooms.SignJSONBytes(cDoc, rooms.SigningKey{ServerName: "evil.test", KeyID: evilKeyID, Private: wrongPriv})
			if err != nil {
				t.Error(err)
			}
			writeRawJSON(rw, 200, []byte(`{"server_keys":[`+string(signed)+`]}`))
		default:
			http.NotFound(rw, r)
		}
	}), "evil.test")
	a2 := w.start("a2.test", nodeOptions{notaries: []keys.Notary{{ServerName: "evil.test"}}})
	delete(a2.resolver.hosts, "c.test:8448")
	a2.resolver.mapHost("evil.test", 8448, evil.addr)
	if _, err := a2.ring.RequestKey(ctx, "c.test", cKeyID); !errors.Is(err, keys.ErrKeyNotFound) || !strings.Contains(err.Error(), "notary signature") {
		t.Fatalf("bad notary signature: got %v", err)
	}
}
