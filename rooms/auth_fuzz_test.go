package rooms_test

import (
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
)

// FuzzCheckAuth builds signed events with arbitrary content and state keys
// and judges them: the rules must return a verdict, never panic, and the
// two entry points must agree.
func FuzzCheckAuth(f *testing.F) {
	var fuzzRooms []*roomstest.Room
	for _, id := range []string{"10", "12"} {
		r := roomstest.NewRoom(f, version(f, id), roomstest.Options{JoinRule: "knock_restricted", AdditionalCreators: []string{carol}})
		r.Join(ann)
		r.SendState(alice, "m.room.third_party_invite", "tok", roomstest.ThirdPartyInviteContent(roomstest.IdentityKey()))
		fuzzRooms = append(fuzzRooms, r)
	}
	types := []string{"m.room.member", "m.room.power_levels", "m.room.create", "m.room.join_rules", "m.room.third_party_invite", "m.room.message", "m.room.redaction"}
	seeds := []struct {
		kind     uint8
		stateKey string
		content  string
	}{
		{0, bob, `{"membership":"join"}`},
		{0, bob, `{"membership":"join","join_authorised_via_users_server":"@alice:a.test"}`},
		{0, bob, `{"membership":"join","join_authorised_via_users_server":["x"]}`},
		{0, bob, `{"membership":"invite","third_party_invite":{"signed":{"mxid":"@bob:b.test","token":"tok","signatures":{"id.test":{"ed25519:0":"AAAA"}}}}}`},
		{0, bob, `{"membership":"invite","third_party_invite":"x"}`},
		{0, bob, `{"membership":5}`},
		{0, bob, `{"membership":"knock"}`},
		{1, "", `{"ban":"50","users":{"@x:y":1}}`},
		{1, "", `{"users":[1],"events":{"a":"b"},"notifications":3}`},
		{1, "", `{"users":{"@alice:a.test":100,"@carol:c.test":5}}`},
		{2, "", `{"room_version":"12","additional_creators":[1,"@x"]}`},
		{3, "", `{"join_rule":["public"]}`},
		{4, "tok", `{"public_keys":[{"public_key":7}],"public_key":"!!"}`},
		{5, "", `{}`},
		{6, "", `{"redacts":"$x"}`},
	}
	for _, s := range seeds {
		for v := range uint8(2) {
			f.Add(v, s.kind, s.stateKey, []byte(s.content))
		}
	}
	f.Fuzz(func(t *testing.T, v, kind uint8, stateKey string, raw []byte) {
		r := fuzzRooms[int(v)%len(fuzzRooms)].WithTB(t)
		tree, err := rooms.ParseJSON(raw)
		if err != nil {
			return
		}
		content, ok := tree.(map[string]any)
		if !ok {
			return
		}
		s := roomstest.Spec{Type: types[int(kind)%len(types)], Sender: bob, Content: content}
		if kind%2 == 0 || s.Type == "m.room.member" {
			s.StateKey = rooms.StringPtr(stateKey)
		}
		if s.Type == "m.room.redaction" {
			s.Redacts = r.Create().EventID()
		}
		ev, err := rooms.BuildEvent(r.Version, rooms.EventTemplate{
			Type: s.Type, StateKey: s.StateKey, Sender: s.Sender, RoomID: r.ID, Content: s.Content,
			PrevEvents: r.Extremities(), Depth: 10, OriginServerTS: 1, Redacts: s.Redacts,
			AuthEvents: authIDs(r, s),
		}, roomstest.UserKey(bob))
		if err != nil {
			return // not a valid event (format, sizes)
		}
		byState := rooms.CheckAuth(ev, r.State())
		byAuth := rooms.CheckAuthEvents(ev, r.AuthEventsOf(ev), r.Create(), nil)
		if ev.Type() != "m.room.create" && (byState == nil) != (byAuth == nil) {
			t.Fatalf("CheckAuth says %v but CheckAuthEvents says %v", byState, byAuth)
		}
		rooms.AuthSelection(ev)
		rooms.RedactionAllowed(ev, r.Create(), r.State())
	})
}

// authIDs returns the IDs of the state events the selection picks for s.
func authIDs(r *roomstest.Room, s roomstest.Spec) []string {
	var out []string
	t := rooms.EventTemplate{Type: s.Type, StateKey: s.StateKey, Sender: s.Sender, Content: s.Content}
	for _, k := range rooms.AuthSelectionFor(r.Version, t) {
		if ev := r.StateEvent(k.Type, k.StateKey); ev != nil {
			out = append(out, ev.EventID())
		}
	}
	return out
}
