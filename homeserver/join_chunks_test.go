package homeserver_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

// reshapingJoiner is a resident whose send_join answers pass through
// reshape (state, auth chain), as another server's answer may be ordered
// or cut.
type reshapingJoiner struct {
	*inProcessRemote
	reshape func(state, chain [][]byte) ([][]byte, [][]byte)
}

func (r *reshapingJoiner) SendJoin(ctx context.Context, server, roomID, eventID string, event []byte) ([][]byte, [][]byte, []byte, error) {
	state, chain, join, err := r.inProcessRemote.SendJoin(ctx, server, roomID, eventID, event)
	if err != nil {
		return nil, nil, nil, err
	}
	state, chain = r.reshape(state, chain)
	return state, chain, join, nil
}

// chunkedJoinRoom is a resident's room of the given version with 12
// members of its own, a topic set by one of them (bob) and that member's
// ID; the join's answer is read 3 events at a time.
func chunkedJoinRoom(t *testing.T, version string) (resident *homeserver.Engine, roomID string, bobJoin string) {
	t.Helper()
	t.Cleanup(homeserver.SetJoinChunk(3))
	ctx := context.Background()
	resident = &homeserver.Engine{
		ServerName: remote, Signer: roomstest.Key(remote), Store: storetest.Open(t), Keys: testKeys{},
		Logger: zerolog.New(zerolog.NewTestWriter(t)),
	}
	roomID, err := resident.CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: bob, Version: version, Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 11 {
		user := fmt.Sprintf("@member%d:%s", i, remote)
		if _, err := resident.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.member", StateKey: rooms.StringPtr(user), Sender: user, Content: map[string]any{"membership": "join"}}); err != nil {
			t.Fatal(err)
		}
	}
	topicSetter := fmt.Sprintf("@member%d:%s", 4, remote)
	if _, err := resident.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.power_levels", StateKey: rooms.StringPtr(""), Sender: bob,
		Content: powerWith(version, topicSetter)}); err != nil {
		t.Fatal(err)
	}
	if _, err := resident.SendEvent(ctx, roomID, homeserver.LocalEvent{Type: "m.room.topic", StateKey: rooms.StringPtr(""), Sender: topicSetter, Content: map[string]any{"topic": "chunks"}}); err != nil {
		t.Fatal(err)
	}
	member, err := resident.Store.CurrentStateEvent(ctx, roomID, store.StateKey{Type: "m.room.member", StateKey: topicSetter})
	if err != nil {
		t.Fatal(err)
	}
	return resident, roomID, member
}

// powerWith is power levels where user (not the creator, bob) may set the
// topic; version 12 keeps creators out of the users list.
func powerWith(version, user string) map[string]any {
	users := map[string]any{user: 50}
	if version != "12" {
		users[bob] = 100
	}
	return map[string]any{"users": users, "events": map[string]any{"m.room.topic": 50}}
}

// requireSameMembers fails unless our copy of the room has the resident's
// joined members (alice among them, the resident having taken her join)
// and its topic.
func requireSameMembers(t *testing.T, resident *homeserver.Engine, ours *homeserver.Host, roomID string) {
	t.Helper()
	ctx := context.Background()
	want, err := resident.Store.Members(ctx, roomID, "join")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ours.Engine.Store.Members(ctx, roomID, "join")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("our joined members are %v, want %v", got, want)
	}
	topicID, err := ours.Engine.Store.CurrentStateEvent(ctx, roomID, store.StateKey{Type: "m.room.topic"})
	if err != nil {
		t.Fatalf("our topic: %v", err)
	}
	topic, err := ours.Engine.Store.Event(ctx, topicID)
	if err != nil || topic.Event.Content()["topic"] != "chunks" {
		t.Fatalf("our topic event %s: %v", topicID, err)
	}
}

// TestJoin_ChunkedAnswer: joins whose answers are read a few events at
// a time, in room versions 12 (the create event is in the state only) and
// 10 (it is in the auth chain too): with the state in reverse (the create
// event last), with an auth chain lacking a state event that another state
// event names (judged last, after the others), and with an auth chain
// lacking an event another chain event names (nothing is compacted). Each
// join holds the resident's members and topic.
func TestJoin_ChunkedAnswer(t *testing.T) {
	for _, version := range []string{"12", "10"} {
		for _, shape := range []string{"reversed", "state-only auth event", "open chain"} {
			t.Run(version+"/"+shape, func(t *testing.T) {
				resident, roomID, bobJoin := chunkedJoinRoom(t, version)
				v, _ := rooms.LookupVersion(version)
				without := func(list [][]byte, drop func(*rooms.Event) bool) [][]byte {
					return slices.DeleteFunc(list, func(raw []byte) bool {
						ev, err := rooms.ParseEvent(v, raw)
						if err != nil {
							t.Fatal(err)
						}
						return drop(ev)
					})
				}
				link := &reshapingJoiner{inProcessRemote: &inProcessRemote{origin: ourName, resident: resident}, reshape: func(state, chain [][]byte) ([][]byte, [][]byte) {
					switch shape {
					case "reversed":
						slices.Reverse(state)
						slices.Reverse(chain)
					case "state-only auth event":
						chain = without(chain, func(ev *rooms.Event) bool { return ev.EventID() == bobJoin })
					case "open chain":
						chain = without(chain, func(ev *rooms.Event) bool {
							sk, _ := ev.StateKey()
							return ev.Type() == "m.room.member" && sk == bob
						})
					}
					return state, chain
				}}
				h := newHost(t)
				h.Engine.Remote = link
				if _, _, err := h.JoinRoom(context.Background(), roomID, alice, []string{remote}); err != nil {
					t.Fatal(err)
				}
				requireSameMembers(t, resident, h, roomID)
			})
		}
	}
}

// TestJoin_ChunkedAnswerForgedStateEvent: an answer read a few events at a
// time with one member event of the state altered after signing (in the
// last chunk) is refused, naming the event, and the room is not joined.
func TestJoin_ChunkedAnswerForgedStateEvent(t *testing.T) {
	resident, roomID, _ := chunkedJoinRoom(t, "12")
	link := &reshapingJoiner{inProcessRemote: &inProcessRemote{origin: ourName, resident: resident}, reshape: func(state, chain [][]byte) ([][]byte, [][]byte) {
		for i := len(state) - 1; i >= 0; i-- {
			if bytes.Contains(state[i], []byte(`"@member7:`+remote+`"`)) && bytes.Contains(state[i], []byte(`"m.room.member"`)) {
				state[i] = bytes.Replace(state[i], []byte(`"join"`), []byte(`"leave"`), 1)
				break
			}
		}
		return state, chain
	}}
	h := newHost(t)
	h.Engine.Remote = link
	_, _, err := h.JoinRoom(context.Background(), roomID, alice, []string{remote})
	if err == nil || !strings.Contains(err.Error(), "state event") {
		t.Fatalf("join with a forged state event: %v, want a refusal naming the state event", err)
	}
	if r, err := h.Engine.Store.Room(context.Background(), roomID); err == nil && r.Status == store.RoomJoined {
		t.Fatal("the room is joined after a refused answer")
	}
}
