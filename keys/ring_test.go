package keys

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
)

type ringClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *ringClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *ringClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fakeFetcher is a Fetcher made of functions, counting calls.
type fakeFetcher struct {
	direct      func(ctx context.Context, server string) ([]byte, error)
	query       func(ctx context.Context, notary string, q []KeyQuery) ([][]byte, error)
	directCalls atomic.Int64
	queryCalls  atomic.Int64
}

func (f *fakeFetcher) FetchServerKeys(ctx context.Context, server string) ([]byte, error) {
	f.directCalls.Add(1)
	if f.direct == nil {
		return nil, errors.New("no direct route")
	}
	return f.direct(ctx, server)
}

func (f *fakeFetcher) QueryServerKeys(ctx context.Context, notary string, q []KeyQuery) ([][]byte, error) {
	f.queryCalls.Add(1)
	if f.query == nil {
		return nil, errors.New("no notary route")
	}
	return f.query(ctx, notary, q)
}

func ringOwn(t testing.TB, version string, seedByte byte) *Own {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = seedByte
	}
	k, err := NewPrivateKey(version, seed)
	if err != nil {
		t.Fatal(err)
	}
	return &Own{Current: []PrivateKey{k}}
}

func mustDoc(t testing.TB, server string, own *Own, validUntil time.Time) []byte {
	t.Helper()
	doc, err := ServerKeyDocument(server, own, validUntil.UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func newTestRing(t testing.TB, clock *ringClock, f Fetcher, notaries ...Notary) *Ring {
	t.Helper()
	r, err := NewRing(RingConfig{ServerName: "me.example", Own: ringOwn(t, "me", 1), Fetcher: f, Notaries: notaries, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRing_DirectFetchAndValidity(t *testing.T) {
	clock := &ringClock{now: time.UnixMilli(1_700_000_000_000)}
	remote := ringOwn(t, "r1", 2)
	f := &fakeFetcher{}
	f.direct = func(_ context.Context, server string) ([]byte, error) {
		// Valid for 30 days: the ring must cap it at fetch time + 7 days.
		return mustDoc(t, server, remote, clock.Now().Add(30*24*time.Hour)), nil
	}
	ring := newTestRing(t, clock, f)
	ctx := context.Background()

	pub, err := ring.RequestKey(ctx, "remote.example", "ed25519:r1")
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(remote.Current[0].Public()) {
		t.Fatal("wrong key")
	}
	stored, err := ring.ServerKeys(ctx, "remote.example")
	if err != nil {
		t.Fatal(err)
	}
	fetched := clock.Now().UnixMilli()
	if len(stored) != 1 || stored[0].Source != SourceDirect || stored[0].FetchedTS != fetched || stored[0].ValidUntilTS != fetched+MaxValidityMS || stored[0].Expired {
		t.Fatalf("stored = %+v", stored)
	}

	// Cached: no second fetch.
	if _, err := ring.VerifyKey(ctx, "remote.example", "ed25519:r1", fetched+1000); err != nil {
		t.Fatal(err)
	}
	if n := f.directCalls.Load(); n != 1 {
		t.Fatalf("direct fetches = %d, want 1", n)
	}

	// An event from beyond the 7-day cap needs a refresh, which happens once
	// the refetch interval has passed; the refreshed key then covers it.
	clock.Advance(8 * 24 * time.Hour)
	if _, err := ring.VerifyKey(ctx, "remote.example", "ed25519:r1", clock.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if n := f.directCalls.Load(); n != 2 {
		t.Fatalf("direct fetches = %d, want 2", n)
	}

	// Unknown key ID: fetched once more, then ErrKeyNotFound.
	clock.Advance(2 * time.Minute)
	if _, err := ring.RequestKey(ctx, "remote.example", "ed25519:nope"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := ring.RequestKey(ctx, "remote.example", "curve25519:x"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("other algorithm: %v", err)
	}
}

func TestRing_ExpiredAndOldKeys(t *testing.T) {
	clock := &ringClock{now: time.UnixMilli(1_700_000_000_000)}
	remote := ringOwn(t, "cur", 3)
	oldPub := ringOwn(t, "old", 4).Current[0].Public()
	retiredAt := clock.Now().Add(-time.Hour).UnixMilli()
	remote.Old = []OldKey{{KeyID: "ed25519:old", Public: oldPub, ExpiredTS: retiredAt}}
	validUntil := clock.Now().Add(-time.Minute) // already expired
	f := &fakeFetcher{direct: func(_ context.Context, server string) ([]byte, error) {
		return mustDoc(t, server, remote, validUntil), nil
	}}
	ring := newTestRing(t, clock, f)
	ctx := context.Background()

	if _, err := ring.RequestKey(ctx, "remote.example", "ed25519:cur"); !errors.Is(err, ErrKeyExpired) {
		t.Fatalf("expired current key for a request: %v", err)
	}
	// Still fine for an event sent while it was valid.
	if _, err := ring.VerifyKey(ctx, "remote.example", "ed25519:cur", validUntil.Add(-time.Hour).UnixMilli()); err != nil {
		t.Fatalf("event within validity: %v", err)
	}
	// Old keys verify events before their expiry only, and never requests.
	if _, err := ring.VerifyKey(ctx, "remote.example", "ed25519:old", retiredAt-1); err != nil {
		t.Fatalf("old key before expiry: %v", err)
	}
	if _, err := ring.VerifyKey(ctx, "remote.example", "ed25519:old", retiredAt); !errors.Is(err, ErrKeyExpired) {
		t.Fatalf("old key at expiry: %v", err)
	}
	if _, err := ring.RequestKey(ctx, "remote.example", "ed25519:old"); !errors.Is(err, ErrKeyExpired) {
		t.Fatalf("old key for a request: %v", err)
	}
	// Repeated lookups of the stale key do not hammer the server.
	if n := f.directCalls.Load(); n != 1 {
		t.Fatalf("direct fetches = %d, want 1", n)
	}
}

func TestRing_OwnKeys(t *testing.T) {
	clock := &ringClock{now: time.UnixMilli(1_700_000_000_000)}
	f := &fakeFetcher{}
	ring := newTestRing(t, clock, f)
	ring.cfg.Own.Old = []OldKey{{KeyID: "ed25519:gone", Public: ringOwn(t, "gone", 9).Current[0].Public(), ExpiredTS: 1000}}
	ctx := context.Background()
	if pub, err := ring.RequestKey(ctx, "me.example", "ed25519:me"); err != nil || !pub.Equal(ring.Signer().PublicKey()) {
		t.Fatalf("own key: %v", err)
	}
	if _, err := ring.VerifyKey(ctx, "me.example", "ed25519:gone", 999); err != nil {
		t.Fatalf("own old key: %v", err)
	}
	if _, err := ring.RequestKey(ctx, "me.example", "ed25519:gone"); !errors.Is(err, ErrKeyExpired) {
		t.Fatalf("own old key for a request: %v", err)
	}
	if f.directCalls.Load()+f.queryCalls.Load() != 0 {
		t.Fatal("own keys were fetched")
	}
}

func TestRing_ConcurrentLookupsShareOneFetch(t *testing.T) {
	clock := &ringClock{now: time.UnixMilli(1_700_000_000_000)}
	remote := ringOwn(t, "r1", 5)
	release := make(chan struct{})
	f := &fakeFetcher{}
	f.direct = func(_ context.Context, server string) ([]byte, error) {
		<-release
		return mustDoc(t, server, remote, clock.Now().Add(time.Hour)), nil
	}
	ring := newTestRing(t, clock, f)
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := ring.RequestKey(context.Background(), "remote.example", "ed25519:r1")
			errs <- err
		}()
	}
	// Wait until one lookup is fetching and the others wait on it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ring.mu.Lock()
		st := ring.servers["remote.example"]
		waiting := st != nil && st.inflight != nil && st.waiters == n-1
		ring.mu.Unlock()
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lookups never all waited on one fetch")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if c := f.directCalls.Load(); c != 1 {
		t.Fatalf("direct fetches = %d, want 1", c)
	}
}

func TestRing_FailuresBackOff(t *testing.T) {
	clock := &ringClock{now: time.UnixMilli(1_700_000_000_000)}
	remote := ringOwn(t, "r1", 6)
	var up atomic.Bool
	f := &fakeFetcher{}
	f.direct = func(_ context.Context, server string) ([]byte, error) {
		if !up.Load() {
			return nil, errors.New("connection refused")
		}
		return mustDoc(t, server, remote, clock.Now().Add(time.Hour)), nil
	}
	ring := newTestRing(t, clock, f)
	ctx := context.Background()
	lookup := func() error {
		_, err := ring.RequestKey(ctx, "remote.example", "ed25519:r1")
		return err
	}
	if err := lookup(); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("first lookup: %v", err)
	}
	if err := lookup(); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("second lookup: %v", err)
	}
	if c := f.directCalls.Load(); c != 1 {
		t.Fatalf("fetches during back-off = %d, want 1", c)
	}
	clock.Advance(DefaultBackoffBase + time.Second)
	_ = lookup()
	if c := f.directCalls.Load(); c != 2 {
		t.Fatalf("fetches after first back-off = %d, want 2", c)
	}
	// The second failure doubles the wait.
	clock.Advance(DefaultBackoffBase + time.Second)
	_ = lookup()
	if c := f.directCalls.Load(); c != 2 {
		t.Fatalf("fetches within doubled back-off = %d, want 2", c)
	}
	up.Store(true)
	clock.Advance(DefaultBackoffBase)
	if err := lookup(); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	if c := f.directCalls.Load(); c != 3 {
		t.Fatalf("fetches = %d, want 3", c)
	}
}

// notaryResponse builds what a notary returns: the origin's document with
// the notary's signature added.
func notaryResponse(t testing.TB, originDoc []byte, notary rooms.SigningKey) []byte {
	t.Helper()
	signed, err := rooms.SignJSONBytes(originDoc, notary)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func TestRing_Notary(t *testing.T) {
	clock := &ringClock{now: time.UnixMilli(1_700_000_000_000)}
	origin := ringOwn(t, "o1", 7)
	notaryOwn := ringOwn(t, "n1", 8)
	impostor := ringOwn(t, "n1", 10)
	notaryKey := notaryOwn.Signer("notary.example")

	for _, tc := range []struct {
		name     string
		signWith rooms.SigningKey
		pinned   bool
		wantErr  bool
	}{
		{name: "pinned notary key", signWith: notaryKey, pinned: true},
		{name: "notary key fetched directly", signWith: notaryKey},
		{name: "wrong notary signature", signWith: impostor.Signer("notary.example"), pinned: true, wantErr: true},
		{name: "wrong notary signature, fetched key", signWith: impostor.Signer("notary.example"), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeFetcher{}
			f.direct = func(_ context.Context, server string) ([]byte, error) {
				if server == "notary.example" && !tc.pinned {
					return mustDoc(t, server, notaryOwn, clock.Now().Add(time.Hour)), nil
				}
				return nil, fmt.Errorf("%s is unreachable", server)
			}
			var asked []KeyQuery
			f.query = func(_ context.Context, notary string, q []KeyQuery) ([][]byte, error) {
				if notary != "notary.example" {
					return nil, fmt.Errorf("unexpected notary %s", notary)
				}
				asked = q
				return [][]byte{notaryResponse(t, mustDoc(t, "origin.example", origin, clock.Now().Add(time.Hour)), tc.signWith)}, nil
			}
			n := Notary{ServerName: "notary.example"}
			if tc.pinned {
				n.VerifyKeys = map[string]ed25519.PublicKey{"ed25519:n1": notaryOwn.Current[0].Public()}
			}
			ring := newTestRing(t, clock, f, n)
			pub, err := ring.RequestKey(context.Background(), "origin.example", "ed25519:o1")
			if tc.wantErr {
				if !errors.Is(err, ErrKeyNotFound) {
					t.Fatalf("got %v, want ErrKeyNotFound", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !pub.Equal(origin.Current[0].Public()) {
				t.Fatal("wrong key")
			}
			if len(asked) != 1 || asked[0].ServerName != "origin.example" || asked[0].MinimumValidUntilTS < clock.Now().UnixMilli() {
				t.Fatalf("notary asked %+v", asked)
			}
			stored, _ := ring.ServerKeys(context.Background(), "origin.example")
			if len(stored) != 1 || stored[0].Source != "notary:notary.example" {
				t.Fatalf("stored %+v", stored)
			}
		})
	}
}

func TestRing_NoNotaryByDefault(t *testing.T) {
	clock := &ringClock{now: time.UnixMilli(1_700_000_000_000)}
	f := &fakeFetcher{}
	ring := newTestRing(t, clock, f)
	if _, err := ring.RequestKey(context.Background(), "origin.example", "ed25519:x"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatal(err)
	}
	if f.queryCalls.Load() != 0 {
		t.Fatal("a notary was asked although none is configured")
	}
}

func TestRing_CacheSurvivesRestart(t *testing.T) {
	clock := &ringClock{now: time.UnixMilli(1_700_000_000_000)}
	remote := ringOwn(t, "r1", 11)
	f := &fakeFetcher{direct: func(_ context.Context, server string) ([]byte, error) {
		return mustDoc(t, server, remote, clock.Now().Add(time.Hour)), nil
	}}
	cache := &MemoryCache{}
	mk := func() *Ring {
		r, err := NewRing(RingConfig{ServerName: "me.example", Own: ringOwn(t, "me", 1), Fetcher: f, Cache: cache, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	ctx := context.Background()
	if _, err := mk().RequestKey(ctx, "remote.example", "ed25519:r1"); err != nil {
		t.Fatal(err)
	}
	if _, err := mk().RequestKey(ctx, "remote.example", "ed25519:r1"); err != nil {
		t.Fatal(err)
	}
	if c := f.directCalls.Load(); c != 1 {
		t.Fatalf("fetches = %d, want 1 (second ring reads the cache)", c)
	}
	doc, _ := cache.LoadKeyDocument(ctx, "remote.example")
	if _, err := ParseServerKeys(doc, "remote.example", 0); err != nil {
		t.Fatalf("cached document: %v", err)
	}
}

func TestRing_NotaryQuery(t *testing.T) {
	clock := &ringClock{now: time.UnixMilli(1_700_000_000_000)}
	remote := ringOwn(t, "r1", 12)
	var online atomic.Bool
	online.Store(true)
	validity := time.Hour
	f := &fakeFetcher{direct: func(_ context.Context, server string) ([]byte, error) {
		if server != "remote.example" || !online.Load() {
			return nil, errors.New("unreachable")
		}
		return mustDoc(t, server, remote, clock.Now().Add(validity)), nil
	}}
	ring := newTestRing(t, clock, f)
	ctx := context.Background()
	me := ring.Signer()

	check := func(docs []map[string]any, server string, key ed25519.PublicKey, keyID string) int64 {
		t.Helper()
		for _, d := range docs {
			if d["server_name"] != server {
				continue
			}
			if err := rooms.VerifyJSONSignature(d, server, keyID, key); err != nil {
				t.Fatalf("origin signature on %s: %v", server, err)
			}
			if err := rooms.VerifyJSONSignature(d, "me.example", me.KeyID, me.PublicKey()); err != nil {
				t.Fatalf("our signature on %s: %v", server, err)
			}
			return d["valid_until_ts"].(int64)
		}
		t.Fatalf("no document for %s in %v", server, docs)
		return 0
	}

	docs, err := ring.NotaryQuery(ctx, []KeyQuery{{ServerName: "remote.example"}, {ServerName: "me.example"}, {ServerName: "gone.example"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 {
		t.Fatalf("got %d documents, want 2 (unreachable server left out)", len(docs))
	}
	first := check(docs, "remote.example", remote.Current[0].Public(), "ed25519:r1")
	check(docs, "me.example", me.PublicKey(), me.KeyID)

	// Served from the cache while fresh.
	if _, err := ring.NotaryQuery(ctx, []KeyQuery{{ServerName: "remote.example"}}); err != nil {
		t.Fatal(err)
	}
	if c := f.directCalls.Load(); c != 2 { // remote once, gone.example once
		t.Fatalf("direct fetches = %d, want 2", c)
	}

	// minimum_valid_until_ts beyond the cached document forces a refetch.
	clock.Advance(2 * time.Minute)
	docs, err = ring.NotaryQuery(ctx, []KeyQuery{{ServerName: "remote.example", MinimumValidUntilTS: first + 1}})
	if err != nil {
		t.Fatal(err)
	}
	if second := check(docs, "remote.example", remote.Current[0].Public(), "ed25519:r1"); second <= first {
		t.Fatalf("valid_until_ts %d not refreshed past %d", second, first)
	}

	// The origin goes offline: the last document is still served.
	online.Store(false)
	clock.Advance(2 * time.Hour)
	docs, err = ring.NotaryQuery(ctx, []KeyQuery{{ServerName: "remote.example"}})
	if err != nil {
		t.Fatal(err)
	}
	check(docs, "remote.example", remote.Current[0].Public(), "ed25519:r1")
}

// TestRing_ServerKeyVector runs the captured Synapse key response through
// the ring: its key verifies events from before its valid_until_ts, its
// old key events from before expired_ts, and neither signs requests today.
func TestRing_ServerKeyVector(t *testing.T) {
	raw, _, public, keyID, server := serverKeyVector(t)
	const validUntil = 1493142432964
	clock := &ringClock{now: time.UnixMilli(validUntil - 60_000)}
	f := &fakeFetcher{direct: func(_ context.Context, s string) ([]byte, error) {
		if s != server {
			return nil, fmt.Errorf("unexpected server %s", s)
		}
		return raw, nil
	}}
	ring := newTestRing(t, clock, f)
	ctx := context.Background()
	pub, err := ring.VerifyKey(ctx, server, keyID, validUntil-1)
	if err != nil {
		t.Fatal(err)
	}
	if rooms.EncodeBase64(pub) != public {
		t.Fatalf("key %s, want %s", rooms.EncodeBase64(pub), public)
	}
	if _, err := ring.VerifyKey(ctx, server, "ed25519:old", 929059200-1); err != nil {
		t.Fatalf("old key before expired_ts: %v", err)
	}
	clock.Advance(365 * 24 * time.Hour)
	if _, err := ring.RequestKey(ctx, server, keyID); !errors.Is(err, ErrKeyExpired) {
		t.Fatalf("request with a key past valid_until_ts: %v", err)
	}
	if _, err := ring.RequestKey(ctx, server, "ed25519:old"); !errors.Is(err, ErrKeyExpired) {
		t.Fatalf("request with an old key: %v", err)
	}
}
