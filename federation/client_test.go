package federation

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/rooms"
)

// TestClient_SignsWhatItSends: the receiving side verifies the X-Matrix
// header against the raw request line and body it actually got, for
// paths and queries that need escaping.
func TestClient_SignsWhatItSends(t *testing.T) {
	pki := newTestPKI(t)
	clock := &discoveryClock{now: time.Now()}
	r := newFakeResolver()
	own := testKeys(t, 1)
	pub := own.Current[0].Public()
	var mu sync.Mutex
	var failures []string
	tgt := startTLSTarget(t, pki, "verifier", "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if (req.Method == "PUT" || req.Method == "POST") && len(body) == 0 {
			mu.Lock()
			failures = append(failures, req.Method+" "+req.RequestURI+": no body")
			mu.Unlock()
		}
		var content any
		if len(body) > 0 {
			var err error
			if content, err = rooms.ParseJSON(body); err != nil {
				t.Errorf("body is not strict JSON: %v", err)
			}
		}
		x, err := ParseXMatrix(req.Header.Get("Authorization"))
		if err == nil {
			err = VerifyRequest(x, x.Destination, req.Method, req.RequestURI, content, pub)
		}
		if err == nil && (x.Origin != "me.test" || x.Destination != "dest.test") {
			err = errors.New("wrong origin or destination " + x.Origin + " " + x.Destination)
		}
		if err != nil {
			mu.Lock()
			failures = append(failures, req.Method+" "+req.RequestURI+": "+err.Error())
			mu.Unlock()
		}
		writeJSON(w, 200, map[string]any{})
	}), "dest.test")
	r.mapHost("dest.test", 8448, tgt.addr)
	c, err := NewClient(ClientConfig{ServerName: "me.test", Keys: own, Resolver: r, RootCAs: pki.pool, AllowPrivateAddresses: true, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	requests := []Request{
		{Method: "GET", Path: "/_matrix/federation/v1/event/%24abc%2Fdef%3D", Query: url.Values{"x": {"@bob:b.test"}, "y": {"a b&c=d", "é"}}},
		{Method: "PUT", Path: "/_matrix/federation/v1/send/1700000000000/", Body: map[string]any{"pdus": []any{}, "origin": "me.test", "text": "<&>\u2028"}},
		{Method: "POST", Path: "/_matrix/federation/v1/get_missing_events/%21room%3Aa.test", Body: []byte(`{"limit": 10, "earliest_events": ["$a"]}`)},
		{Method: "PUT", Path: "/_matrix/federation/v2/invite/%21r%3Aa/%24e", Body: map[string]any{}},
		{Method: "POST", Path: "/_matrix/federation/v1/user/keys/query"}, // sent as {}
	}
	for _, req := range requests {
		req.Destination = "dest.test"
		if _, err := c.Do(ctx, req); err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.Path, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("signatures did not verify on the receiving side:\n%s", strings.Join(failures, "\n"))
	}
	// All the requests went over one connection.
	if n := tgt.conns.Load(); n != 1 {
		t.Fatalf("%d connections for %d requests, want 1 (reuse)", n, len(requests))
	}
}

func TestClient_ResponseLimitAndErrors(t *testing.T) {
	pki := newTestPKI(t)
	r := newFakeResolver()
	tgt := startTLSTarget(t, pki, "big", "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case "/big":
			writeRawJSON(w, 200, []byte(`{"pad":"`+strings.Repeat("x", 5000)+`"}`))
		case "/limited":
			writeJSON(w, 429, map[string]any{"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 2500})
		default:
			writeRawJSON(w, 502, []byte(`<html>bad gateway</html>`))
		}
	}), "big.test")
	r.mapHost("big.test", 8448, tgt.addr)
	c := newDiscoveryClient(t, pki, r, &discoveryClock{now: time.Now()}, true)
	ctx := context.Background()
	if _, err := c.Do(ctx, Request{Method: "GET", Destination: "big.test", Path: "/big", MaxResponseBytes: 1000}); err == nil || !strings.Contains(err.Error(), "larger than 1000 bytes") {
		t.Fatalf("oversized response: %v", err)
	}
	if body, err := c.Do(ctx, Request{Method: "GET", Destination: "big.test", Path: "/big"}); err != nil || len(body) < 5000 {
		t.Fatalf("response within the default limit: %v", err)
	}
	var herr *HTTPError
	if _, err := c.Do(ctx, Request{Method: "GET", Destination: "big.test", Path: "/limited"}); !errors.As(err, &herr) || herr.Status != 429 || herr.ErrCode != "M_LIMIT_EXCEEDED" || herr.RetryAfterMS != 2500 {
		t.Fatalf("429: %v", err)
	}
	if _, err := c.Do(ctx, Request{Method: "GET", Destination: "big.test", Path: "/other"}); !errors.As(err, &herr) || herr.Status != 502 || herr.ErrCode != "" {
		t.Fatalf("502 without a Matrix body: %v", err)
	}
	if _, err := c.Do(ctx, Request{Method: "GET", Destination: "not a name", Path: "/x"}); err == nil {
		t.Fatal("invalid destination accepted")
	}
}

func TestClient_TrustConfiguration(t *testing.T) {
	pki := newTestPKI(t)
	r := newFakeResolver()
	tgt := startTLSTarget(t, pki, "ca", "127.0.0.1:0", nil, "ca.test")
	r.mapHost("ca.test", 8448, tgt.addr)
	ctx := context.Background()
	get := func(c *Client) error {
		_, err := c.Do(ctx, Request{Method: "GET", Destination: "ca.test", Path: "/x", Unauthenticated: true})
		return err
	}

	// Without our CA the certificate is refused.
	noCA, err := NewClient(ClientConfig{ServerName: "me.test", Keys: testKeys(t, 1), Resolver: r, RootCAs: x509.NewCertPool(), AllowPrivateAddresses: true})
	if err != nil {
		t.Fatal(err)
	}
	defer noCA.Close()
	if err := get(noCA); err == nil {
		t.Fatal("certificate from an unknown CA accepted")
	}

	// federation.ca_file adds it.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pki.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	withCA, err := NewClient(ClientConfig{ServerName: "me.test", Keys: testKeys(t, 1), Resolver: r, RootCAs: x509.NewCertPool(), CAFile: caFile, AllowPrivateAddresses: true})
	if err != nil {
		t.Fatal(err)
	}
	defer withCA.Close()
	if err := get(withCA); err != nil {
		t.Fatalf("with ca_file: %v", err)
	}
	if _, err := NewClient(ClientConfig{ServerName: "me.test", Keys: testKeys(t, 1), CAFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Fatal("missing ca_file accepted")
	}

	// verify_tls = false accepts it, and says so loudly.
	var logs bytes.Buffer
	insecure, err := NewClient(ClientConfig{ServerName: "me.test", Keys: testKeys(t, 1), Resolver: r, RootCAs: x509.NewCertPool(),
		InsecureSkipVerify: true, AllowPrivateAddresses: true, Logger: zerolog.New(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	defer insecure.Close()
	if err := get(insecure); err != nil {
		t.Fatalf("verify_tls = false: %v", err)
	}
	if !strings.Contains(logs.String(), `"level":"warn"`) || !strings.Contains(logs.String(), "NOT verified") {
		t.Fatalf("no warning logged for verify_tls = false: %s", logs.String())
	}
}

func TestClient_TransportsBounded(t *testing.T) {
	c, err := NewClient(ClientConfig{ServerName: "me.test", Keys: testKeys(t, 1), RootCAs: x509.NewCertPool()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range maxTransports + 10 {
		if _, err := c.transport("d" + strconv.Itoa(i) + ".test"); err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	n := len(c.transports)
	c.mu.Unlock()
	if n != maxTransports {
		t.Fatalf("%d connection pools kept, want %d", n, maxTransports)
	}
}
