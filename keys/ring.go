package keys

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
)

// Sources recorded in StoredKey.Source.
const (
	SourceDirect       = "direct"  // fetched from the server's own /_matrix/key/v2/server
	SourceNotaryPrefix = "notary:" // followed by the notary's server name
)

// Defaults for the Ring's tunables.
const (
	DefaultMinRefetchInterval = time.Minute
	DefaultBackoffBase        = 30 * time.Second
	DefaultBackoffMax         = time.Hour
	DefaultFetchTimeout       = 30 * time.Second
	DefaultOwnKeyValidity     = 24 * time.Hour
)

// notaryParallelism bounds the servers one NotaryQuery fetches at once.
const notaryParallelism = 8

var (
	// ErrKeyNotFound is matched when a server's key is unknown and could
	// not be fetched.
	ErrKeyNotFound = errors.New("server key not found")
	// ErrKeyExpired is matched when the key is known but not valid for the
	// purpose: past its validity at the time asked about, or retired
	// (old_verify_keys) when a current key is required.
	ErrKeyExpired = errors.New("server key not valid")
)

// Fetcher retrieves key documents over the network. federation.Client
// implements it; the keys package itself does no I/O.
type Fetcher interface {
	// FetchServerKeys returns the body of GET /_matrix/key/v2/server
	// fetched from serverName itself.
	FetchServerKeys(ctx context.Context, serverName string) ([]byte, error)
	// QueryServerKeys asks notary (POST /_matrix/key/v2/query) for the
	// keys in query and returns each element of the response's
	// server_keys array as raw JSON.
	QueryServerKeys(ctx context.Context, notary string, query []KeyQuery) ([][]byte, error)
}

// KeyQuery asks for one server's keys.
type KeyQuery struct {
	ServerName string
	KeyIDs     []string // empty means every key
	// MinimumValidUntilTS (ms) asks for a document valid at least until
	// then; zero means "now".
	MinimumValidUntilTS int64
}

// Notary is a trusted key server (federation.trusted_key_servers).
type Notary struct {
	ServerName string
	// VerifyKeys pins the notary's keys. When empty the notary's keys are
	// fetched directly from it.
	VerifyKeys map[string]ed25519.PublicKey
}

// RingConfig configures NewRing. ServerName, Own and Fetcher are required.
type RingConfig struct {
	ServerName string
	Own        *Own
	Fetcher    Fetcher
	// Cache persists fetched keys; nil means a new MemoryCache.
	Cache KeyCache
	// Notaries are asked, in order, when a direct fetch fails or does not
	// produce the key. None are trusted by default.
	Notaries []Notary
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MinRefetchInterval is the least time between two fetches of one
	// server's keys after a successful fetch (default 1 minute).
	MinRefetchInterval time.Duration
	// BackoffBase and BackoffMax bound the wait after failed fetches: it
	// doubles from BackoffBase with each consecutive failure, up to
	// BackoffMax (defaults 30 seconds and 1 hour).
	BackoffBase, BackoffMax time.Duration
	// FetchTimeout bounds one fetch, whoever waits for it (default 30s).
	FetchTimeout time.Duration
	// OwnKeyValidity is how far ahead valid_until_ts lies in documents we
	// publish for ourselves through the notary endpoint (default 24h).
	OwnKeyValidity time.Duration
}

// Ring holds our own keys and a cache of other servers' keys, fetching
// missing or stale keys through its Fetcher: directly from the server
// first, then through the configured notaries. Concurrent lookups of one
// server share a single fetch; failed fetches are backed off
// exponentially. A Ring is safe for concurrent use.
type Ring struct {
	cfg RingConfig

	mu      sync.Mutex
	servers map[string]*serverState
}

// serverState is what the Ring knows about one remote server.
type serverState struct {
	loaded    bool                 // keys were read from the cache
	keys      map[string]StoredKey // by key ID
	doc       []byte               // latest self-signed document (canonical)
	docValid  int64                // its valid_until_ts
	docFetch  int64                // when it was fetched (0: unknown, from the cache)
	inflight  *fetchCall
	waiters   int // lookups waiting on inflight
	failures  int
	nextFetch time.Time
	lastErr   error
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// NewRing checks cfg, fills in defaults and returns a Ring.
func NewRing(cfg RingConfig) (*Ring, error) {
	if cfg.ServerName == "" {
		return nil, errors.New("key ring: no server name")
	}
	if cfg.Own == nil || len(cfg.Own.Current) == 0 {
		return nil, errors.New("key ring: no signing key")
	}
	if cfg.Fetcher == nil {
		return nil, errors.New("key ring: no fetcher")
	}
	for _, n := range cfg.Notaries {
		if n.ServerName == "" {
			return nil, errors.New("key ring: notary without a server name")
		}
		if n.ServerName == cfg.ServerName {
			return nil, errors.New("key ring: this server cannot be its own notary")
		}
	}
	if cfg.Cache == nil {
		cfg.Cache = &MemoryCache{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MinRefetchInterval <= 0 {
		cfg.MinRefetchInterval = DefaultMinRefetchInterval
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = DefaultBackoffBase
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.OwnKeyValidity <= 0 {
		cfg.OwnKeyValidity = DefaultOwnKeyValidity
	}
	return &Ring{cfg: cfg, servers: map[string]*serverState{}}, nil
}

// ServerName returns the name our own keys sign for.
func (r *Ring) ServerName() string { return r.cfg.ServerName }

// Signer returns the key we sign requests and events with.
func (r *Ring) Signer() rooms.SigningKey { return r.cfg.Own.Signer(r.cfg.ServerName) }

// Notaries returns the configured trusted key servers.
func (r *Ring) Notaries() []Notary { return r.cfg.Notaries }

func (r *Ring) nowMS() int64 { return r.cfg.Now().UnixMilli() }

// purpose says what a looked-up key will verify.
type purpose int

const (
	forEvent   purpose = iota // an event sent at ts: old keys count before their expiry
	forRequest                // a request now: current keys only
)

func usable(k StoredKey, ts int64, p purpose) bool {
	if k.Expired {
		return p == forEvent && ts < k.ValidUntilTS
	}
	return k.ValidUntilTS >= ts
}

// VerifyKey returns server's key keyID if it may verify an event sent at
// ts (ms): a current key whose validity reaches ts, or a retired key that
// expired after ts. Missing or stale keys are fetched. Errors match
// ErrKeyNotFound or ErrKeyExpired.
func (r *Ring) VerifyKey(ctx context.Context, server, keyID string, ts int64) (ed25519.PublicKey, error) {
	return r.lookup(ctx, server, keyID, ts, forEvent, true)
}

// RequestKey returns server's current key keyID for verifying a request
// signed now (X-Matrix). Retired keys and keys past their validity are
// refused with an error matching ErrKeyExpired; unknown keys match
// ErrKeyNotFound.
func (r *Ring) RequestKey(ctx context.Context, server, keyID string) (ed25519.PublicKey, error) {
	return r.lookup(ctx, server, keyID, r.nowMS(), forRequest, true)
}

// KeyLookup adapts the ring to rooms.KeyLookup for one operation: the
// lookups it makes run under ctx. Do not keep it beyond that operation.
func (r *Ring) KeyLookup(ctx context.Context) rooms.KeyLookup {
	return ringLookup{ctx: ctx, r: r}
}

type ringLookup struct {
	ctx context.Context
	r   *Ring
}

func (l ringLookup) VerifyKey(server, keyID string, ts int64) (ed25519.PublicKey, error) {
	return l.r.VerifyKey(l.ctx, server, keyID, ts)
}

// ServerKeys returns every key the ring holds for server (fetching none),
// sorted by key ID, each with the source it came from.
func (r *Ring) ServerKeys(ctx context.Context, server string) ([]StoredKey, error) {
	st, err := r.state(ctx, server)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	out := make([]StoredKey, 0, len(st.keys))
	for _, k := range st.keys {
		out = append(out, k)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out, nil
}

func (r *Ring) lookup(ctx context.Context, server, keyID string, ts int64, p purpose, useNotaries bool) (ed25519.PublicKey, error) {
	if !rooms.IsEd25519KeyID(keyID) {
		return nil, fmt.Errorf("%w: %s key %s: not an ed25519 key", ErrKeyNotFound, server, keyID)
	}
	if server == r.cfg.ServerName {
		return r.ownKey(keyID, ts, p)
	}
	k, ok, err := r.cached(ctx, server, keyID)
	if err != nil {
		return nil, err
	}
	if ok && usable(k, ts, p) {
		return k.PublicKey, nil
	}
	// Ask for a document valid at least until now (or ts, if later): for
	// an old event an older validity would do, but servers and notaries
	// serve current documents anyway.
	minValid := max(ts, r.nowMS())
	fetchErr := r.refresh(ctx, server, keyID, minValid, useNotaries)
	k, ok, err = r.cached(ctx, server, keyID)
	if err != nil {
		return nil, err
	}
	switch {
	case ok && usable(k, ts, p):
		return k.PublicKey, nil
	case ok && k.Expired:
		return nil, fmt.Errorf("%w: %s key %s was retired at %d", ErrKeyExpired, server, keyID, k.ValidUntilTS)
	case ok:
		return nil, fmt.Errorf("%w: %s key %s is valid only until %d, needed at %d", ErrKeyExpired, server, keyID, k.ValidUntilTS, ts)
	case fetchErr != nil:
		return nil, fmt.Errorf("%w: %s key %s: %w", ErrKeyNotFound, server, keyID, fetchErr)
	default:
		return nil, fmt.Errorf("%w: %s does not publish key %s", ErrKeyNotFound, server, keyID)
	}
}

func (r *Ring) ownKey(keyID string, ts int64, p purpose) (ed25519.PublicKey, error) {
	for _, k := range r.cfg.Own.Current {
		if k.KeyID() == keyID {
			return k.Public(), nil
		}
	}
	for _, k := range r.cfg.Own.Old {
		if k.KeyID == keyID {
			if p == forEvent && ts < k.ExpiredTS {
				return k.Public, nil
			}
			return nil, fmt.Errorf("%w: our key %s was retired at %d", ErrKeyExpired, keyID, k.ExpiredTS)
		}
	}
	return nil, fmt.Errorf("%w: we have no key %s", ErrKeyNotFound, keyID)
}

// state returns server's entry, loading its keys from the cache once.
func (r *Ring) state(ctx context.Context, server string) (*serverState, error) {
	r.mu.Lock()
	st := r.servers[server]
	if st == nil {
		st = &serverState{keys: map[string]StoredKey{}}
		r.servers[server] = st
	}
	loaded := st.loaded
	r.mu.Unlock()
	if loaded {
		return st, nil
	}
	stored, err := r.cfg.Cache.LoadServerKeys(ctx, server)
	if err != nil {
		return nil, fmt.Errorf("load keys of %s: %w", server, err)
	}
	var doc []byte
	if dc, ok := r.cfg.Cache.(KeyDocumentCache); ok {
		if doc, err = dc.LoadKeyDocument(ctx, server); err != nil {
			return nil, fmt.Errorf("load key document of %s: %w", server, err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !st.loaded {
		for _, k := range stored {
			if _, newer := st.keys[k.KeyID]; !newer {
				st.keys[k.KeyID] = k
			}
		}
		if st.doc == nil && doc != nil {
			if sk, err := ParseServerKeys(doc, server, 0); err == nil {
				st.doc, st.docValid = doc, sk.ValidUntilTS
			}
		}
		st.loaded = true
	}
	return st, nil
}

func (r *Ring) cached(ctx context.Context, server, keyID string) (StoredKey, bool, error) {
	st, err := r.state(ctx, server)
	if err != nil {
		return StoredKey{}, false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := st.keys[keyID]
	return k, ok, nil
}

// refresh fetches server's keys unless a fetch is under way (then it waits
// for that one) or the server is backed off.
func (r *Ring) refresh(ctx context.Context, server, keyID string, minValid int64, useNotaries bool) error {
	st, err := r.state(ctx, server)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if c := st.inflight; c != nil {
		st.waiters++
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			st.waiters--
			r.mu.Unlock()
		}()
		select {
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return fmt.Errorf("waiting for keys of %s: %w", server, ctx.Err())
		}
	}
	now := r.cfg.Now()
	if now.Before(st.nextFetch) {
		defer r.mu.Unlock()
		if st.lastErr != nil {
			return fmt.Errorf("not retrying before %s after %d failures: %w", st.nextFetch.UTC().Format(time.RFC3339), st.failures, st.lastErr)
		}
		return nil
	}
	c := &fetchCall{done: make(chan struct{})}
	st.inflight = c
	r.mu.Unlock()

	// The fetch is shared by every waiter, so the first caller's
	// cancellation must not end it; it has its own deadline.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.FetchTimeout)
	c.err = r.fetch(fctx, server, keyID, minValid, useNotaries)
	cancel()

	r.mu.Lock()
	st.inflight = nil
	if c.err != nil {
		st.failures++
		st.lastErr = c.err
		st.nextFetch = now.Add(backoff(r.cfg.BackoffBase, r.cfg.BackoffMax, st.failures))
	} else {
		st.failures = 0
		st.lastErr = nil
		st.nextFetch = now.Add(r.cfg.MinRefetchInterval)
	}
	r.mu.Unlock()
	close(c.done)
	return c.err
}

func backoff(base, limit time.Duration, failures int) time.Duration {
	d := base
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// fetch asks the server, then each notary, stopping once keyID is known
// and valid at minValid. It fails only if no source answered usefully.
func (r *Ring) fetch(ctx context.Context, server, keyID string, minValid int64, useNotaries bool) error {
	var errs []error
	satisfied := func() bool {
		k, ok, err := r.cached(ctx, server, keyID)
		return err == nil && ok && usable(k, minValid, forEvent)
	}
	answered := false

	raw, err := r.cfg.Fetcher.FetchServerKeys(ctx, server)
	if err == nil {
		var sk *ServerKeys
		sk, err = ParseServerKeys(raw, server, r.nowMS())
		if err == nil {
			err = r.remember(ctx, sk, SourceDirect)
			answered = true
		}
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("direct: %w", err))
	}
	if satisfied() {
		return nil
	}
	if useNotaries {
		for _, n := range r.cfg.Notaries {
			if n.ServerName == server {
				continue
			}
			got, err := r.fromNotary(ctx, n, KeyQuery{ServerName: server, KeyIDs: []string{keyID}, MinimumValidUntilTS: minValid})
			if err != nil {
				errs = append(errs, fmt.Errorf("notary %s: %w", n.ServerName, err))
				continue
			}
			answered = answered || got
			if satisfied() {
				return nil
			}
		}
	}
	if answered {
		return nil
	}
	return errors.Join(errs...)
}

// fromNotary queries n and keeps every valid document it returns for the
// server asked about. It reports whether any document was accepted.
func (r *Ring) fromNotary(ctx context.Context, n Notary, q KeyQuery) (bool, error) {
	docs, err := r.cfg.Fetcher.QueryServerKeys(ctx, n.ServerName, []KeyQuery{q})
	if err != nil {
		return false, err
	}
	var errs []error
	accepted := false
	for _, raw := range docs {
		sk, err := ParseServerKeys(raw, q.ServerName, r.nowMS())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := r.checkNotarySignature(ctx, n, sk.Object); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := r.remember(ctx, sk, SourceNotaryPrefix+n.ServerName); err != nil {
			errs = append(errs, err)
			continue
		}
		accepted = true
	}
	if !accepted && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("no keys for %s in the response", q.ServerName))
	}
	if accepted {
		return true, nil
	}
	return false, errors.Join(errs...)
}

// checkNotarySignature requires obj to carry at least one signature of n
// under a key of n we know, and every such signature to verify.
func (r *Ring) checkNotarySignature(ctx context.Context, n Notary, obj map[string]any) error {
	sigs := rooms.Signatures(obj, n.ServerName)
	ids := make([]string, 0, len(sigs))
	for id := range sigs {
		if rooms.IsEd25519KeyID(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	verified := 0
	var errs []error
	for _, id := range ids {
		var pub ed25519.PublicKey
		if len(n.VerifyKeys) > 0 {
			pub = n.VerifyKeys[id]
		} else {
			k, err := r.lookup(ctx, n.ServerName, id, r.nowMS(), forRequest, false)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			pub = k
		}
		if pub == nil {
			continue
		}
		if err := rooms.VerifyJSONSignature(obj, n.ServerName, id, pub); err != nil {
			return fmt.Errorf("notary signature: %w", err)
		}
		verified++
	}
	if verified == 0 {
		errs = append(errs, fmt.Errorf("%w %s with a known key", rooms.ErrNoSignature, n.ServerName))
		return fmt.Errorf("notary signature: %w", errors.Join(errs...))
	}
	return nil
}

// remember stores sk's keys (in memory and in the cache) and keeps its
// document, stripped of other servers' signatures, if it is the freshest.
func (r *Ring) remember(ctx context.Context, sk *ServerKeys, source string) error {
	st, err := r.state(ctx, sk.ServerName)
	if err != nil {
		return err
	}
	stored := sk.StoredKeys(source)
	doc, err := ownSignedDocument(sk)
	if err != nil {
		return err
	}
	r.mu.Lock()
	for _, k := range stored {
		st.keys[k.KeyID] = k
	}
	keepDoc := st.doc == nil || sk.ValidUntilTS >= st.docValid
	if keepDoc {
		st.doc, st.docValid, st.docFetch = doc, sk.ValidUntilTS, sk.FetchedTS
	}
	r.mu.Unlock()

	if err := r.cfg.Cache.StoreServerKeys(ctx, stored); err != nil {
		return fmt.Errorf("store keys of %s: %w", sk.ServerName, err)
	}
	if dc, ok := r.cfg.Cache.(KeyDocumentCache); ok && keepDoc {
		if err := dc.StoreKeyDocument(ctx, sk.ServerName, doc); err != nil {
			return fmt.Errorf("store key document of %s: %w", sk.ServerName, err)
		}
	}
	return nil
}

// ownSignedDocument returns sk's document with only the server's own
// signatures, as canonical JSON.
func ownSignedDocument(sk *ServerKeys) ([]byte, error) {
	obj := make(map[string]any, len(sk.Object))
	for k, v := range sk.Object {
		obj[k] = v
	}
	sigs, _ := sk.Object["signatures"].(map[string]any)
	obj["signatures"] = map[string]any{sk.ServerName: sigs[sk.ServerName]}
	doc, err := rooms.EncodeCanonical(obj)
	if err != nil {
		return nil, fmt.Errorf("key document of %s: %w", sk.ServerName, err)
	}
	return doc, nil
}

// NotaryQuery answers our notary endpoint (/_matrix/key/v2/query): for
// each query, the server's latest key document valid until at least the
// query's MinimumValidUntilTS (now when zero), fetched directly from the
// server when what we hold is older, has passed half its lifetime or is
// missing, and signed by us. Our own name gets our own document. A server
// we cannot reach is answered from the last document we hold, even a stale
// one, so old signatures stay checkable; one we never reached is left out.
// The result may hold more keys than asked for.
func (r *Ring) NotaryQuery(ctx context.Context, queries []KeyQuery) ([]map[string]any, error) {
	unique := make([]KeyQuery, 0, len(queries))
	seen := map[string]bool{}
	for _, q := range queries {
		if !seen[q.ServerName] {
			seen[q.ServerName] = true
			unique = append(unique, q)
		}
	}
	// Servers are fetched in parallel, a few at a time, so one slow
	// server does not hold up the answer for the others.
	docs := make([][]byte, len(unique))
	errs := make([]error, len(unique))
	sem := make(chan struct{}, notaryParallelism)
	var wg sync.WaitGroup
	for i, q := range unique {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if q.ServerName == r.cfg.ServerName {
				docs[i], errs[i] = ServerKeyDocument(r.cfg.ServerName, r.cfg.Own, r.cfg.Now().Add(r.cfg.OwnKeyValidity).UnixMilli())
				return
			}
			docs[i], errs[i] = r.notaryDocument(ctx, q)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(unique))
	for i, q := range unique {
		doc := docs[i]
		if doc == nil {
			continue
		}
		v, err := rooms.ParseJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("notary: document of %s: %w", q.ServerName, err)
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("notary: document of %s is not a JSON object", q.ServerName)
		}
		for _, k := range r.cfg.Own.Current {
			if err := rooms.SignJSON(obj, k.SigningKey(r.cfg.ServerName)); err != nil {
				return nil, fmt.Errorf("notary: sign document of %s: %w", q.ServerName, err)
			}
		}
		out = append(out, obj)
	}
	return out, nil
}

func (r *Ring) notaryDocument(ctx context.Context, q KeyQuery) ([]byte, error) {
	st, err := r.state(ctx, q.ServerName)
	if err != nil {
		return nil, err
	}
	now := r.nowMS()
	minValid := q.MinimumValidUntilTS
	if minValid <= 0 {
		minValid = now
	}
	r.mu.Lock()
	doc, valid, fetched := st.doc, st.docValid, st.docFetch
	r.mu.Unlock()
	fresh := doc != nil && valid >= minValid && fetched > 0 && now < fetched+(valid-fetched)/2
	if fresh {
		return doc, nil
	}
	// Direct only: a notary answering through other notaries would only
	// repeat what they say and could loop.
	keyID := ""
	if len(q.KeyIDs) > 0 {
		keyID = q.KeyIDs[0]
	}
	_ = r.refresh(ctx, q.ServerName, keyID, minValid, false)
	r.mu.Lock()
	doc = st.doc
	r.mu.Unlock()
	return doc, nil
}
