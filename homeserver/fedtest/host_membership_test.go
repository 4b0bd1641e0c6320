package fedtest

import (
	"errors"
	"slices"
	"testing"

	"github.com/ferry-matrix/ferry/homeserver"
)

// TestHost_RemoteMembership: the host of B resolves A's aliases, joins
// A's room by alias, leaves with a reason, and a join through a server
// that is down fails as Unavailable (502).
func TestHost_RemoteMembership(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	ctx := testContext(t)
	alice, bob, dave := a.User("alice"), b.User("bob"), b.User("dave")
	alias := "#lobby:" + a.Name
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPublicChat, Alias: alias})
	if err != nil {
		t.Fatal(err)
	}
	hostB := &homeserver.Host{Engine: b.Engine}
	for _, u := range []string{bob, dave} {
		if _, err := hostB.PutUser(ctx, homeserver.User{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	got, servers, err := hostB.Alias(ctx, alias)
	if err != nil || got != roomID || !slices.Contains(servers, a.Name) {
		t.Fatalf("remote alias: %s %v %v", got, servers, err)
	}
	var he *homeserver.Error
	if _, _, err := hostB.Alias(ctx, "#none:"+a.Name); !errors.As(err, &he) || !he.NotFound() {
		t.Fatalf("unknown remote alias: %v, want not found", err)
	}
	if _, _, err := hostB.JoinRoom(ctx, alias, b.User("carol"), nil); !errors.As(err, &he) || !he.Forbidden() {
		t.Fatalf("unregistered joiner: %v, want forbidden", err)
	}
	joinedRoom, joinID, err := hostB.JoinRoom(ctx, alias, bob, nil)
	if err != nil || joinedRoom != roomID {
		t.Fatalf("join by remote alias: %s, %v", joinedRoom, err)
	}
	a.WaitEvent(t, joinID)
	leaveID, err := hostB.Leave(ctx, roomID, bob, "see you")
	if err != nil {
		t.Fatal(err)
	}
	b.Flush(t)
	a.WaitEvent(t, leaveID)
	se, err := a.DB.Event(ctx, leaveID)
	if err != nil || se.Event.Membership() != "leave" || se.Event.Content()["reason"] != "see you" {
		t.Fatalf("leave on A: %+v, %v", se, err)
	}

	a.stop(false)
	if _, _, err := hostB.JoinRoom(ctx, roomID, dave, []string{a.Name}); !errors.As(err, &he) || !he.Unavailable() {
		t.Fatalf("join through a server that is down: %v, want unavailable", err)
	}
	if _, err := hostB.Knock(ctx, roomID, dave, "", []string{a.Name}); !errors.As(err, &he) || !he.Unavailable() {
		t.Fatalf("knock through a server that is down: %v, want unavailable", err)
	}
}

// TestHost_RejectRemoteInvite: the host rejects an invite from another
// server without naming a server (the inviter's is used), and deleting a
// user rejects the invites it holds.
func TestHost_RejectRemoteInvite(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2)
	a, b := nodes[0], nodes[1]
	ctx := testContext(t)
	alice, bob, dave := a.User("alice"), b.User("bob"), b.User("dave")
	roomID, err := a.Engine.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: alice, Version: "12", Preset: homeserver.PresetPrivateChat})
	if err != nil {
		t.Fatal(err)
	}
	hostB := &homeserver.Host{Engine: b.Engine}
	for _, u := range []string{bob, dave} {
		if _, err := hostB.PutUser(ctx, homeserver.User{UserID: u}); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{bob, dave} {
		if _, err := a.Engine.Invite(ctx, roomID, alice, u); err != nil {
			t.Fatal(err)
		}
	}
	leaveID, err := hostB.Leave(ctx, roomID, bob, "no thanks")
	if err != nil {
		t.Fatal(err)
	}
	se, err := a.DB.Event(ctx, leaveID)
	if err != nil || se.Event.Membership() != "leave" || se.Event.Content()["reason"] != "no thanks" {
		t.Fatalf("rejection on A: %+v, %v", se, err)
	}
	if err := hostB.DeleteUser(ctx, dave); err != nil {
		t.Fatal(err)
	}
	if m := a.membership(t, roomID, dave); m != "leave" {
		t.Fatalf("dave's membership on A after his deletion on B: %q", m)
	}
	if _, err := hostB.User(ctx, dave); err == nil {
		t.Fatal("dave is still registered")
	}

	// Inviting through A's host: B refuses an invite for a user it does
	// not have (403); a server that is down is Unavailable (502).
	hostA := &homeserver.Host{Engine: a.Engine, AutoRegisterUsers: true}
	var he *homeserver.Error
	if _, err := hostA.Invite(ctx, roomID, alice, b.User("ghost")); !errors.As(err, &he) || !he.Forbidden() {
		t.Fatalf("invite refused by B: %v, want forbidden", err)
	}
	if m := a.membership(t, roomID, b.User("ghost")); m != "" {
		t.Fatalf("the refused invite left membership %q on A", m)
	}
	b.stop(false)
	if _, err := hostA.Invite(ctx, roomID, alice, bob); !errors.As(err, &he) || !he.Unavailable() {
		t.Fatalf("invite to a server that is down: %v, want unavailable", err)
	}
}
