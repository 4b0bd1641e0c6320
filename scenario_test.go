package ferry_test

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry"
	"github.com/ferry-matrix/ferry/config"
	"github.com/ferry-matrix/ferry/hostapi/client"
)

// site is one embedded Ferry server seen the way a host product sees it:
// only through its host API and its event stream.
type site struct {
	t      *testing.T
	name   string
	srv    *ferry.Server
	api    *client.Client
	cursor string // the stream position read up to
	seen   []client.Item
}

// startSite starts a Ferry server on loopback whose server name is its
// federation address, trusting other test servers' self-signed
// certificates.
func startSite(t *testing.T) *site {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	name := "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	cfg := config.Default()
	cfg.ServerName = name
	cfg.DataDir = t.TempDir()
	cfg.Federation.Listen = name
	cfg.Federation.VerifyTLS = false
	cfg.Federation.AllowPrivateAddresses = true
	cfg.Host.Listen = "127.0.0.1:0"
	cfg.Host.Token = "token-of-" + name
	srv, err := ferry.Start(cfg, ferry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
	})
	api, err := client.New(srv.HostAPI().URL(), cfg.Host.Token)
	if err != nil {
		t.Fatal(err)
	}
	return &site{t: t, name: name, srv: srv, api: api}
}

func (s *site) user(localpart string) string { return "@" + localpart + ":" + s.name }

// register adds a local user through the host API.
func (s *site) register(localpart string) string {
	s.t.Helper()
	id := s.user(localpart)
	if _, err := s.api.PutUser(context.Background(), id, client.UserProfile{DisplayName: localpart}); err != nil {
		s.t.Fatalf("%s: register %s: %v", s.name, id, err)
	}
	return id
}

// streamEvent is the part of a streamed event the scenario looks at.
type streamEvent struct {
	EventID  string         `json:"event_id"`
	Type     string         `json:"type"`
	Sender   string         `json:"sender"`
	StateKey *string        `json:"state_key"`
	Content  map[string]any `json:"content"`
	Redacts  string         `json:"redacts"`
}

func decodeEvent(t *testing.T, raw json.RawMessage) streamEvent {
	t.Helper()
	var ev streamEvent
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatalf("streamed event %s: %v", raw, err)
	}
	if ev.EventID == "" {
		t.Fatalf("streamed event without event_id: %s", raw)
	}
	return ev
}

// await reads the site's stream until an item satisfies match, failing
// after a while. Items read on the way are kept for later checks.
func (s *site) await(what string, match func(client.Item, streamEvent) bool) streamEvent {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		page, err := s.api.Events(ctx, s.cursor, 2*time.Second, 100)
		cancel()
		if err != nil {
			s.t.Fatalf("%s: events: %v", s.name, err)
		}
		s.cursor = page.Next
		for _, item := range page.Items {
			s.seen = append(s.seen, item)
			var ev streamEvent
			if item.Event != nil {
				ev = decodeEvent(s.t, item.Event)
			}
			if match(item, ev) {
				return ev
			}
		}
	}
	s.t.Fatalf("%s: no %s in the event stream within 30 s", s.name, what)
	return streamEvent{}
}

// awaitMembership waits for user's membership event in room.
func (s *site) awaitMembership(roomID, user, membership string) streamEvent {
	s.t.Helper()
	return s.await(user+" "+membership, func(item client.Item, ev streamEvent) bool {
		return item.Kind == client.KindEvent && item.RoomID == roomID && ev.Type == "m.room.member" &&
			ev.StateKey != nil && *ev.StateKey == user && ev.Content["membership"] == membership
	})
}

// awaitText waits for a message with body in room.
func (s *site) awaitText(roomID, body string) streamEvent {
	s.t.Helper()
	return s.await("message "+body, func(item client.Item, ev streamEvent) bool {
		return item.Kind == client.KindEvent && item.RoomID == roomID && ev.Type == "m.room.message" && ev.Content["body"] == body
	})
}

func (s *site) say(roomID, sender, body string) string {
	s.t.Helper()
	id, err := s.api.Send(context.Background(), roomID, client.SendRequest{
		Sender: sender, Type: "m.room.message", Content: map[string]any{"msgtype": "m.text", "body": body},
	})
	if err != nil {
		s.t.Fatalf("%s: send as %s: %v", s.name, sender, err)
	}
	return id
}

// TestHostAPI_RoomsAcrossServers runs the cross-server room life cycle of
// "Rooms across servers" driven only through each server's host API and
// observed only through its event stream: create with an invite, join by
// ID and by alias, messages both ways, kick, ban and unban, knock, redact,
// leave, in both room versions.
func TestHostAPI_RoomsAcrossServers(t *testing.T) {
	for _, version := range []string{"10", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			roomsAcrossServers(t, version)
		})
	}
}

func roomsAcrossServers(t *testing.T, version string) {
	a, b, c := startSite(t), startSite(t), startSite(t)
	ctx := context.Background()
	alice, bob, carol := a.register("alice"), b.register("bob"), c.register("carol")

	// Create on A with an initial invite for a user of B.
	alias := "#lobby-v" + version + ":" + a.name
	created, err := a.api.CreateRoom(ctx, client.CreateRoomRequest{
		Creator: alice, RoomVersion: version, Name: "Lobby", Topic: "cross-server", Alias: alias, Invite: []string{bob},
	})
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	if len(created.FailedInvites) > 0 {
		t.Fatalf("initial invites failed: %v", created.FailedInvites)
	}
	roomID := created.RoomID
	b.await("invite for bob", func(item client.Item, ev streamEvent) bool {
		return item.Kind == client.KindInvite && item.RoomID == roomID && ev.StateKey != nil && *ev.StateKey == bob
	})

	// B joins by room ID through A.
	joined, err := b.api.JoinRoom(ctx, roomID, client.JoinRequest{UserID: bob, Via: []string{a.name}})
	if err != nil || joined.RoomID != roomID {
		t.Fatalf("bob joins: %+v, %v", joined, err)
	}
	a.awaitMembership(roomID, bob, "join")

	// Messages both ways.
	hello := a.say(roomID, alice, "hello from A")
	if got := b.awaitText(roomID, "hello from A"); got.EventID != hello || got.Sender != alice {
		t.Fatalf("B streamed %+v, want event %s from %s", got, hello, alice)
	}
	b.say(roomID, bob, "hello from B")
	a.awaitText(roomID, "hello from B")

	// Open the room, then C joins through the alias.
	if _, err := a.api.SetState(ctx, roomID, "m.room.join_rules", "", client.StateRequest{Sender: alice, Content: map[string]any{"join_rule": "public"}}); err != nil {
		t.Fatalf("open the room: %v", err)
	}
	if joined, err := c.api.JoinRoom(ctx, alias, client.JoinRequest{UserID: carol}); err != nil || joined.RoomID != roomID {
		t.Fatalf("carol joins by alias: %+v, %v", joined, err)
	}
	b.awaitMembership(roomID, carol, "join")
	c.say(roomID, carol, "hello from C")
	a.awaitText(roomID, "hello from C")
	b.awaitText(roomID, "hello from C")

	// Kick, ban, a refused join, unban.
	if _, err := a.api.Kick(ctx, roomID, client.ModerationRequest{Sender: alice, UserID: carol, Reason: "test"}); err != nil {
		t.Fatalf("kick: %v", err)
	}
	c.awaitMembership(roomID, carol, "leave")
	if _, err := a.api.Ban(ctx, roomID, client.ModerationRequest{Sender: alice, UserID: carol}); err != nil {
		t.Fatalf("ban: %v", err)
	}
	b.awaitMembership(roomID, carol, "ban")
	if _, err := c.api.JoinRoom(ctx, roomID, client.JoinRequest{UserID: carol, Via: []string{a.name}}); err == nil {
		t.Fatal("a banned user joined")
	}
	if _, err := a.api.Unban(ctx, roomID, client.ModerationRequest{Sender: alice, UserID: carol}); err != nil {
		t.Fatalf("unban: %v", err)
	}
	b.awaitMembership(roomID, carol, "leave")

	// Knock: the room now asks to knock; A's host sees the knock and
	// invites, C accepts by joining.
	if _, err := a.api.SetState(ctx, roomID, "m.room.join_rules", "", client.StateRequest{Sender: alice, Content: map[string]any{"join_rule": "knock"}}); err != nil {
		t.Fatalf("knock rule: %v", err)
	}
	b.await("knock join rule", func(item client.Item, ev streamEvent) bool {
		return item.RoomID == roomID && ev.Type == "m.room.join_rules" && ev.Content["join_rule"] == "knock"
	})
	if _, err := c.api.Knock(ctx, roomID, client.KnockRequest{UserID: carol, Reason: "let me in", Via: []string{a.name}}); err != nil {
		t.Fatalf("knock: %v", err)
	}
	a.await("knock by carol", func(item client.Item, ev streamEvent) bool {
		return item.Kind == client.KindKnock && item.RoomID == roomID && ev.Sender == carol && ev.Content["membership"] == "knock"
	})
	if _, err := a.api.Invite(ctx, roomID, client.InviteRequest{Sender: alice, UserID: carol}); err != nil {
		t.Fatalf("invite after knock: %v", err)
	}
	if _, err := c.api.JoinRoom(ctx, roomID, client.JoinRequest{UserID: carol, Via: []string{a.name}}); err != nil {
		t.Fatalf("carol joins after the knock: %v", err)
	}
	a.awaitMembership(roomID, carol, "join")
	// B sends to the servers it sees joined: wait until it sees C.
	b.awaitMembership(roomID, carol, "join")

	// Redaction reaches the others.
	oops := b.say(roomID, bob, "oops")
	c.awaitText(roomID, "oops")
	if _, err := b.api.Redact(ctx, roomID, oops, client.RedactRequest{Sender: bob, Reason: "typo"}); err != nil {
		t.Fatalf("redact: %v", err)
	}
	c.await("redaction of "+oops, func(item client.Item, ev streamEvent) bool {
		return ev.Type == "m.room.redaction" && (ev.Redacts == oops || ev.Content["redacts"] == oops)
	})

	// B leaves; A sees it and B no longer lists the room.
	if _, err := b.api.Leave(ctx, roomID, client.LeaveRequest{UserID: bob}); err != nil {
		t.Fatalf("leave: %v", err)
	}
	a.awaitMembership(roomID, bob, "leave")
	summary, err := a.api.Room(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if summary.RoomVersion != version || summary.Name != "Lobby" || summary.JoinedMembers != 2 ||
		strings.Join(summary.Servers, ",") != strings.Join(sortedPair(a.name, c.name), ",") {
		t.Errorf("A's summary after the leave: %+v", summary)
	}
	rooms, err := b.api.Rooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rooms {
		if r.RoomID == roomID {
			t.Errorf("B still lists the room it left: %+v", r)
		}
	}

	// C reads the history it joined into, newest first.
	page, err := c.api.Messages(ctx, roomID, client.MessagesRequest{Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, raw := range page.Chunk {
		if ev := decodeEvent(t, raw); ev.Type == "m.room.message" {
			if body, ok := ev.Content["body"].(string); ok {
				texts = append(texts, body)
			}
		}
	}
	if len(texts) == 0 || texts[0] == "oops" {
		t.Errorf("C's newest messages %q: want the redacted oops without a body first", texts)
	}

	// No stream item came twice.
	for _, s := range []*site{a, b, c} {
		seen := map[string]bool{}
		for _, item := range s.seen {
			if seen[item.Pos] {
				t.Errorf("%s streamed position %s twice", s.name, item.Pos)
			}
			seen[item.Pos] = true
		}
	}
}

func sortedPair(x, y string) []string {
	if y < x {
		return []string{y, x}
	}
	return []string{x, y}
}
