package client

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// closedAddress returns a loopback address nothing listens on: a port
// that was just free.
func closedAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestClient_Unreachable(t *testing.T) {
	t.Parallel()
	for name, address := range map[string]string{
		"closed port":    closedAddress(t),
		"missing socket": "unix:" + filepath.Join(t.TempDir(), "host.sock"),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := New(address, "token")
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Users(context.Background())
			if !IsUnreachable(err) {
				t.Fatalf("Users = %v, want an UnreachableError", err)
			}
			var u *UnreachableError
			errors.As(err, &u)
			if u.Address != address || !strings.Contains(err.Error(), "cannot reach the host API at "+address) {
				t.Errorf("error %q, Address %q; want both to name %s", err, u.Address, address)
			}
			// Follow gives up at once when it never connected.
			err = c.Follow(context.Background(), "0", func(Item) error { return nil })
			if !IsUnreachable(err) {
				t.Errorf("Follow = %v, want an UnreachableError", err)
			}
		})
	}
}

func TestNew_Addresses(t *testing.T) {
	t.Parallel()
	for address, base := range map[string]string{
		"127.0.0.1:8009":        "http://127.0.0.1:8009",
		"[::1]:8009":            "http://[::1]:8009",
		"http://localhost:8009": "http://localhost:8009",
		"https://ferry.test/":   "https://ferry.test",
		"unix:/run/ferry.sock":  "http://ferry-host-api",
	} {
		c, err := New(address, "t")
		if err != nil {
			t.Errorf("New(%q): %v", address, err)
			continue
		}
		if c.base != base || c.Address() != address {
			t.Errorf("New(%q): base %q, Address %q; want %q", address, c.base, c.Address(), base)
		}
	}
	for _, address := range []string{"", "unix:", "localhost", "http://", "http://h/path", "ftp//x"} {
		if _, err := New(address, "t"); err == nil {
			t.Errorf("New(%q) accepted", address)
		}
	}
}

func TestRoute_EscapesEachSegment(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		segments []string
		want     string
	}{
		{[]string{"rooms", "!abc:example.org", "join"}, "/_ferry/v1/rooms/%21abc:example.org/join"},
		{[]string{"rooms", "#lobby:example.org", "join"}, "/_ferry/v1/rooms/%23lobby:example.org/join"},
		{[]string{"aliases", "#a/b?c:example.org"}, "/_ferry/v1/aliases/%23a%2Fb%3Fc:example.org"},
		{[]string{"rooms", "!r", "redact", "$ev/ent+id"}, "/_ferry/v1/rooms/%21r/redact/$ev%2Fent+id"},
		{[]string{"users", "@alice:example.org"}, "/_ferry/v1/users/@alice:example.org"},
		{[]string{"rooms", "!r", "state", "m.room.member", "@bob:b.test"}, "/_ferry/v1/rooms/%21r/state/m.room.member/@bob:b.test"},
	} {
		if got := route(tc.segments...); got != tc.want {
			t.Errorf("route(%q) = %s, want %s", tc.segments, got, tc.want)
		}
	}
}
