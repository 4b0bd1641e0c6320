package rooms_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
)

const benchMembers = 10_000

var (
	bigRoomsOnce sync.Once
	bigRooms     map[string]*roomstest.Room
)

// bigRoom returns a public room of version id with benchMembers joined
// members, 100 of them listed in the power levels, built once per process.
func bigRoom(b *testing.B, id string) *roomstest.Room {
	b.Helper()
	bigRoomsOnce.Do(func() {
		bigRooms = map[string]*roomstest.Room{}
		for _, vid := range []string{"10", "12"} {
			v := version(b, vid)
			r := roomstest.NewRoom(b, v, roomstest.Options{})
			for i := range benchMembers {
				r.Join(fmt.Sprintf("@user%d:s%d.test", i, i%50))
			}
			setLevels(r, func(c map[string]any) {
				users := subMap(c, "users")
				for i := range 100 {
					users[fmt.Sprintf("@user%d:s%d.test", i, i%50)] = int64(50)
				}
			})
			bigRooms[vid] = r
		}
	})
	return bigRooms[id]
}

// BenchmarkCheckAuth_Membership10k judges membership events against the
// state of a room with 10,000 joined members.
func BenchmarkCheckAuth_Membership10k(b *testing.B) {
	for _, id := range []string{"10", "12"} {
		r := bigRoom(b, id)
		state := r.State()
		cases := map[string]*rooms.Event{
			"join": r.Build(roomstest.Member(dave, dave, "join")),
			"kick": r.Build(roomstest.Member(r.Creator, "@user5000:s0.test", "leave")),
			"ban":  r.Build(roomstest.Member("@user7:s7.test", "@user9000:s0.test", "ban")),
		}
		for _, name := range []string{"join", "kick", "ban"} {
			ev := cases[name]
			if err := rooms.CheckAuth(ev, state); err != nil {
				b.Fatalf("v%s %s: %v", id, name, err)
			}
			b.Run(fmt.Sprintf("v%s/%s", id, name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := rooms.CheckAuth(ev, state); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		ev := cases["kick"]
		auth := r.AuthEventsOf(ev)
		b.Run(fmt.Sprintf("v%s/kick-by-auth-events", id), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := rooms.CheckAuthEvents(ev, auth, r.Create(), nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
