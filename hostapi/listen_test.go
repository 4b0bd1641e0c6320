package hostapi_test

import (
	"context"
	"encoding/base64"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/hostapi"
)

func TestLoadOrCreateToken(t *testing.T) {
	dir := t.TempDir()
	token, created, err := hostapi.LoadOrCreateToken(dir)
	if err != nil || !created {
		t.Fatalf("first call: %q, %v, %v", token, created, err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) != 32 {
		t.Errorf("token %q is not 32 bytes of base64url: %v", token, err)
	}
	path := filepath.Join(dir, hostapi.TokenFile)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("token file mode %04o, want 0600", perm)
	}
	again, created, err := hostapi.LoadOrCreateToken(dir)
	if err != nil || created || again != token {
		t.Errorf("second call: %q, %v, %v; want the same token, not created", again, created, err)
	}

	// A token written by the operator is used as is.
	if err := os.WriteFile(path, []byte("chosen-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _, err := hostapi.LoadOrCreateToken(dir); err != nil || got != "chosen-token" {
		t.Errorf("operator's token: %q, %v", got, err)
	}

	// Refused: readable by others, empty.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := hostapi.LoadOrCreateToken(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a 0644 token file: %v, want a refusal saying how to fix it", err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := hostapi.LoadOrCreateToken(dir); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("an empty token file: %v, want a refusal", err)
	}
}

// unixClient sends requests over the unix socket at path.
func unixClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

func TestServer_UnixSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "host.sock")

	// A socket file left by a crashed server: bound, then abandoned
	// without removing the file.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("stale socket file: %v", err)
	}

	n := openNode(t, dir, "unix:"+sock, nil)
	if n.url != "unix:"+sock || n.srv.Addr().Network() != "unix" {
		t.Errorf("URL %q, network %s", n.url, n.srv.Addr().Network())
	}
	info, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Type() != fs.ModeSocket || info.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want a socket with 0660", info.Mode())
	}

	req, _ := http.NewRequest(http.MethodPut, "http://ferry/_ferry/v1/users/"+esc(alice), strings.NewReader(`{"displayname": "A"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := unixClient(sock).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), alice) {
		t.Errorf("PUT user over the socket: %d %s", resp.StatusCode, body)
	}

	// A second server may not take over a socket in use.
	second, err := hostapi.New(hostapi.Config{Host: n.host, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Open("unix:" + sock); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("opening a socket in use: %v", err)
		second.Close(context.Background())
	}

	// Closing removes the socket file.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file after close: %v", err)
	}

	// A regular file at the path is never replaced.
	if err := os.WriteFile(sock, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	third, err := hostapi.New(hostapi.Config{Host: n.host, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := third.Open("unix:" + sock); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("opening over a regular file: %v", err)
		third.Close(context.Background())
	}
}

func TestServer_OpenErrors(t *testing.T) {
	n := newNode(t)
	other, err := hostapi.New(hostapi.Config{Host: n.host, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Open(n.srv.Addr().String()); err == nil {
		t.Error("opened on an address in use")
		other.Close(context.Background())
	}
	if err := other.Open("unix:"); err == nil {
		t.Error("opened unix: without a path")
	}
	if err := n.srv.Open("127.0.0.1:0"); err == nil {
		t.Error("opened twice")
	}
}
