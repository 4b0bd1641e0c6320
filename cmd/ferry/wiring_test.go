package main

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"

	"github.com/ferry-matrix/ferry/federation"
	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/store"
)

// freeLoopbackPort returns a port that was free a moment ago, so a server
// name can name the port its listener will use.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

func startFederating(t *testing.T) (*running, string) {
	t.Helper()
	port := freeLoopbackPort(t)
	name := "127.0.0.1:" + strconv.Itoa(port)
	r := startServe(t, map[string]string{
		"FERRY_DATA_DIR":                           t.TempDir(),
		"FERRY_SERVER_NAME":                        name,
		"FERRY_FEDERATION_LISTEN":                  name,
		"FERRY_FEDERATION_VERIFY_TLS":              "false",
		"FERRY_FEDERATION_ALLOW_PRIVATE_ADDRESSES": "true",
	})
	return r, name
}

// TestServe_WiresStoreEngineAndDirectory runs two `ferry serve` instances
// and checks that what one stores is served to the other over
// authenticated federation: the database, the engine and the directory are
// wired into the federation server, and remote keys land in the store.
func TestServe_WiresStoreEngineAndDirectory(t *testing.T) {
	a, nameA := startFederating(t)
	b, nameB := startFederating(t)
	ctx := context.Background()

	alice := "@alice:" + nameA
	if err := a.inst.Store().PutUser(ctx, store.User{ID: alice, DisplayName: "Alice"}); err != nil {
		t.Fatal(err)
	}
	roomID, err := a.inst.Engine().CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	alias := "#lobby:" + nameA
	if err := a.inst.Store().PutAlias(ctx, store.Alias{Alias: alias, RoomID: roomID, Creator: alice}); err != nil {
		t.Fatal(err)
	}

	entry, err := b.inst.Client().QueryDirectory(ctx, alias)
	if err != nil {
		t.Fatalf("query directory from B: %v", err)
	}
	if entry.RoomID != roomID || len(entry.Servers) == 0 || entry.Servers[0] != nameA {
		t.Fatalf("directory entry %+v, want room %s via %s", entry, roomID, nameA)
	}
	profile, err := b.inst.Client().QueryProfile(ctx, alice, "displayname")
	if err != nil || profile["displayname"] != "Alice" {
		t.Fatalf("profile = %v, %v", profile, err)
	}
	_, err = b.inst.Client().QueryProfile(ctx, "@nobody:"+nameA, "")
	var httpErr *federation.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Status != 404 || httpErr.ErrCode != "M_NOT_FOUND" {
		t.Fatalf("unknown user: %v, want 404 M_NOT_FOUND", err)
	}

	_, err = b.inst.Client().QueryProfile(ctx, alice, "shoe_size")
	if !errors.As(err, &httpErr) || httpErr.Status != 400 {
		t.Fatalf("unknown profile field: %v, want 400", err)
	}
	_, err = b.inst.Client().QueryDirectory(ctx, "#missing:"+nameA)
	if !errors.As(err, &httpErr) || httpErr.Status != 404 {
		t.Fatalf("unknown alias: %v, want 404", err)
	}

	// B is not in the room, so A's engine refuses it the room's state:
	// the room endpoints are routed to the engine.
	// In version 12 the room ID names the create event.
	createID := "$" + roomID[1:]
	_, _, err = b.inst.Client().StateIDs(ctx, nameA, roomID, createID)
	if !errors.As(err, &httpErr) || httpErr.Status != 403 {
		t.Fatalf("state_ids from a server not in the room: %v, want 403", err)
	}

	// A verified B's requests, so B's key is in A's database.
	stored, err := a.inst.Store().LoadServerKeys(ctx, nameB)
	if err != nil || len(stored) == 0 {
		t.Fatalf("A stored no key of B: %v %v", stored, err)
	}
}
