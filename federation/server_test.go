package federation

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
)

// testClock is a settable clock for Server.Now.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type testServer struct {
	*Server
	client *http.Client
	clock  *testClock
	logs   *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines to log
// into while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startServer runs a Server on 127.0.0.1:0 over TLS with a self-signed
// certificate, and returns a client that trusts exactly that certificate.
func startServer(t *testing.T, modify func(s *Server)) *testServer {
	t.Helper()
	own, _, err := keys.LoadOrGenerate(t.TempDir(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clock := &testClock{now: time.UnixMilli(1_800_000_000_000)}
	cert, _, err := LoadOrCreateSelfSigned(t.TempDir(), "localhost:8448", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	s := NewServer("localhost:8448", own)
	s.Addr = "127.0.0.1:0"
	s.TLSConfig = TLSConfig(cert)
	s.Version = "test"
	s.Now = clock.Now
	s.Logger = zerolog.New(io.MultiWriter(logs, zerolog.NewTestWriter(t)))
	if modify != nil {
		modify(s)
	}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"},
	}}
	t.Cleanup(client.CloseIdleConnections)
	return &testServer{Server: s, client: client, clock: clock, logs: logs}
}

func (ts *testServer) do(t *testing.T, method, path string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

func TestServer_KeyDocument(t *testing.T) {
	ts := startServer(t, nil)
	if !strings.HasPrefix(ts.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL() = %q", ts.URL())
	}
	status, header, body := ts.do(t, http.MethodGet, "/_matrix/key/v2/server")
	if status != http.StatusOK || header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", status, header.Get("Content-Type"))
	}
	now := ts.clock.Now()
	got, err := keys.ParseServerKeys(body, "localhost:8448", now.UnixMilli())
	if err != nil {
		t.Fatalf("published document does not verify: %v\n%s", err, body)
	}
	key := ts.Keys.Current[0]
	if !got.VerifyKeys[key.KeyID()].Equal(key.Public()) || len(got.VerifyKeys) != 1 {
		t.Errorf("verify_keys = %v, want %s only", got.VerifyKeys, key)
	}
	if want := now.Add(DefaultKeyValidity).UnixMilli(); got.ValidUntilTS != want {
		t.Errorf("valid_until_ts = %d, want %d (a day ahead)", got.ValidUntilTS, want)
	}

	// Within half the validity the same signed bytes are served; after it
	// the document is re-signed with a later valid_until_ts.
	ts.clock.Advance(DefaultKeyValidity/2 - time.Second)
	if _, _, again := ts.do(t, http.MethodGet, "/_matrix/key/v2/server"); !bytes.Equal(again, body) {
		t.Error("document re-signed before half its validity passed")
	}
	ts.clock.Advance(2 * time.Second)
	_, _, fresh := ts.do(t, http.MethodGet, "/_matrix/key/v2/server")
	refreshed, err := keys.ParseServerKeys(fresh, "localhost:8448", ts.clock.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	if want := ts.clock.Now().Add(DefaultKeyValidity).UnixMilli(); refreshed.ValidUntilTS != want {
		t.Errorf("refreshed valid_until_ts = %d, want %d", refreshed.ValidUntilTS, want)
	}
}

func TestServer_KeyDocumentOldKeys(t *testing.T) {
	old, _ := keys.GenerateKey(rand.Reader)
	ts := startServer(t, func(s *Server) {
		s.Keys.Old = []keys.OldKey{{KeyID: old.KeyID(), Public: old.Public(), ExpiredTS: 1234}}
	})
	_, _, body := ts.do(t, http.MethodGet, "/_matrix/key/v2/server")
	got, err := keys.ParseServerKeys(body, "localhost:8448", 0)
	if err != nil {
		t.Fatal(err)
	}
	if o := got.OldVerifyKeys[old.KeyID()]; o.ExpiredTS != 1234 || !o.Public.Equal(old.Public()) {
		t.Errorf("old_verify_keys = %+v", got.OldVerifyKeys)
	}
}

func TestServer_Version(t *testing.T) {
	ts := startServer(t, nil)
	status, _, body := ts.do(t, http.MethodGet, "/_matrix/federation/v1/version")
	if status != http.StatusOK || string(body) != `{"server":{"name":"Ferry","version":"test"}}` {
		t.Errorf("status %d body %s", status, body)
	}
}

func TestServer_HealthAndWellKnown(t *testing.T) {
	ts := startServer(t, nil)
	if status, _, body := ts.do(t, http.MethodGet, "/healthz"); status != http.StatusOK || string(body) != `{"status":"ok"}` {
		t.Errorf("healthz: %d %s", status, body)
	}
	if status, _, body := ts.do(t, http.MethodGet, "/.well-known/matrix/server"); status != http.StatusNotFound || !strings.Contains(string(body), "M_UNRECOGNIZED") {
		t.Errorf("well-known without delegation: %d %s", status, body)
	}

	delegated := startServer(t, func(s *Server) { s.WellKnownServer = "matrix.example.org:443" })
	status, header, body := delegated.do(t, http.MethodGet, "/.well-known/matrix/server")
	if status != http.StatusOK || string(body) != `{"m.server":"matrix.example.org:443"}` || header.Get("Cache-Control") == "" {
		t.Errorf("well-known: %d %s %v", status, body, header)
	}
}

func TestServer_Unrecognized(t *testing.T) {
	ts := startServer(t, nil)
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/_matrix/federation/v1/nonexistent", http.StatusNotFound},
		{http.MethodGet, "/_matrix/key/v2/server/ed25519:abc", http.StatusNotFound},
		{http.MethodGet, "/_matrix/key/v2/server/", http.StatusNotFound},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodPost, "/_matrix/federation/v1/version", http.StatusMethodNotAllowed},
		{http.MethodPut, "/_matrix/key/v2/server", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		status, header, body := ts.do(t, tt.method, tt.path)
		var e struct{ Errcode, Error string }
		if err := json.Unmarshal(body, &e); err != nil {
			t.Errorf("%s %s: body %q: %v", tt.method, tt.path, body, err)
		}
		if status != tt.status || e.Errcode != "M_UNRECOGNIZED" || header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %s", tt.method, tt.path, status, body)
		}
	}
}

func TestServer_LogsEveryRequestOnce(t *testing.T) {
	ts := startServer(t, nil)
	ts.do(t, http.MethodGet, "/_matrix/federation/v1/version")
	ts.do(t, http.MethodGet, "/nope")
	var lines []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(ts.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["message"] == "request" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("got %d request lines, want 2:\n%s", len(lines), ts.logs)
	}
	for i, want := range []struct {
		path   string
		status float64
	}{{"/_matrix/federation/v1/version", 200}, {"/nope", 404}} {
		l := lines[i]
		if l["method"] != "GET" || l["path"] != want.path || l["status"] != want.status {
			t.Errorf("line %d = %v", i, l)
		}
		for _, field := range []string{"duration_ms", "origin"} {
			if _, ok := l[field]; !ok {
				t.Errorf("line %d lacks %s: %v", i, field, l)
			}
		}
	}
}

// TestLogRequests_Origin checks that the origin an authentication layer
// records ends up on the request's log line.
func TestLogRequests_Origin(t *testing.T) {
	var logs bytes.Buffer
	s := NewServer("hs.test", nil)
	s.Logger = zerolog.New(&logs)
	h := s.logRequests(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setRequestOrigin(r, "remote.test")
		w.WriteHeader(http.StatusAccepted)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPut, "/_matrix/federation/v1/send/1", nil))
	var m map[string]any
	if err := json.Unmarshal(logs.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if m["origin"] != "remote.test" || m["status"] != float64(202) || m["method"] != "PUT" {
		t.Errorf("log line = %v", m)
	}
}

func TestMatrixErrorFor(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		status   int
		code     string
		internal bool
	}{
		{"matrix error", Errorf(http.StatusForbidden, "M_FORBIDDEN", "no"), 403, "M_FORBIDDEN", false},
		{"wrapped matrix error", fmt.Errorf("x: %w", Errorf(http.StatusNotFound, "M_NOT_FOUND", "gone")), 404, "M_NOT_FOUND", false},
		{"bad JSON", fmt.Errorf("body: %w", rooms.ErrInvalidJSON), 400, "M_NOT_JSON", false},
		{"bad event", fmt.Errorf("pdu: %w", rooms.ErrBadFormat), 400, "M_BAD_JSON", false},
		{"room version", fmt.Errorf("%w: 3", rooms.ErrUnsupportedVersion), 400, "M_INCOMPATIBLE_ROOM_VERSION", false},
		{"too large", &http.MaxBytesError{Limit: 10}, 413, "M_TOO_LARGE", false},
		{"unknown", errors.New("database is on fire at /var/lib/secret"), 500, "M_UNKNOWN", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			me, internal := matrixErrorFor(tt.err)
			if me.Status != tt.status || me.Code != tt.code || internal != tt.internal {
				t.Errorf("got %d %s internal=%v", me.Status, me.Code, internal)
			}
			if internal && strings.Contains(me.Message, "secret") {
				t.Errorf("internal error echoed: %q", me.Message)
			}
		})
	}
}

func TestWriteError_Body(t *testing.T) {
	rec := httptest.NewRecorder()
	writeError(rec, httptest.NewRequest(http.MethodGet, "/", nil), &MatrixError{
		Status: 400, Code: "M_INCOMPATIBLE_ROOM_VERSION", Message: "room version 3 is not supported",
		Extra: map[string]any{"room_version": "3"},
	})
	if rec.Code != 400 || rec.Body.String() != `{"errcode":"M_INCOMPATIBLE_ROOM_VERSION","error":"room version 3 is not supported","room_version":"3"}` {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
}

func TestRecoverPanics(t *testing.T) {
	rec := httptest.NewRecorder()
	recoverPanics(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		var m map[string]int
		m["boom"]++
	})).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), "M_UNKNOWN") {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
}

// TestHandle_PathVars checks that variables are matched encoded and
// decoded once: an event ID with an encoded slash stays one segment.
func TestHandle_PathVars(t *testing.T) {
	s := NewServer("hs.test", nil)
	r := mux.NewRouter().SkipClean(true).UseEncodedPath()
	var got string
	r.Handle("/event/{eventId}", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		got = pathVar(r, "eventId")
		return nil
	}))
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/event/%24ab%2Fc%2B..", nil))
	if rec.Code != 200 || got != "$ab/c+.." {
		t.Errorf("status %d, eventId %q", rec.Code, got)
	}

	rec = httptest.NewRecorder()
	req := mux.SetURLVars(httptest.NewRequest(http.MethodGet, "/event/x", nil), map[string]string{"eventId": "%zz"})
	s.handle(func(http.ResponseWriter, *http.Request) error { return nil }).ServeHTTP(rec, req)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "M_INVALID_PARAM") {
		t.Errorf("bad escape: %d %s", rec.Code, rec.Body)
	}
}

func TestServer_OpenClose(t *testing.T) {
	ts := startServer(t, nil)
	addr := ts.ListenAddr().String()

	// The port is taken: a second server binding it fails in Open.
	own, _, _ := keys.LoadOrGenerate(t.TempDir(), rand.Reader)
	other := NewServer("localhost:8448", own)
	other.Addr = addr
	if err := other.Open(); err == nil {
		other.Close(context.Background())
		t.Fatal("second Open on a used port succeeded")
	}
	if err := NewServer("", nil).Open(); err == nil {
		t.Error("Open without name and keys succeeded")
	}

	if err := ts.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ts.URL() != "" {
		t.Errorf("URL() after Close = %q", ts.URL())
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Error("listener still accepts after Close")
	}
}

// TestServer_PlainHTTP serves without TLS, as behind a reverse proxy.
func TestServer_PlainHTTP(t *testing.T) {
	own, _, _ := keys.LoadOrGenerate(t.TempDir(), rand.Reader)
	s := NewServer("hs.test", own)
	s.Addr = "127.0.0.1:0"
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if !strings.HasPrefix(s.URL(), "http://") {
		t.Fatalf("URL() = %q", s.URL())
	}
	resp, err := http.Get(s.URL() + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if _, err := keys.ParseServerKeys(body, "hs.test", 0); err != nil {
		t.Errorf("key document over plain HTTP: %v", err)
	}
}
