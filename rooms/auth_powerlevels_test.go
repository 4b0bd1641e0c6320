package rooms_test

import (
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
)

// plRoom is a room where bob and carol are joined, bob has level 50, and
// bob may send power-levels events (events["m.room.power_levels"] = 50).
func plRoom(t *testing.T, v rooms.Version) *roomstest.Room {
	t.Helper()
	r := newRoom(t, v, roomstest.Options{})
	r.Join(bob)
	r.Join(carol)
	setLevels(r, func(c map[string]any) {
		subMap(c, "users")[bob] = int64(50)
		subMap(c, "events")["m.room.power_levels"] = int64(50)
	})
	return r
}

// bobChanges builds bob's power-levels event: the current content changed
// by mutate.
func bobChanges(r *roomstest.Room, mutate func(c map[string]any)) *rooms.Event {
	c := r.PowerLevelsContent()
	mutate(c)
	return r.Build(roomstest.PowerLevels(bob, c))
}

// v10 9.1 / v12 10.1: the top-level levels are integers; string levels
// (accepted by older versions) are rejected in 10 and 12.
func TestAuthPowerLevels_9_1_IntegerLevels(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := plRoom(t, v)
		for _, key := range []string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"} {
			ev := bobChanges(r, func(c map[string]any) { c[key] = "50" })
			wantRejected(t, r, ev, "power_levels", key+" is not an integer")
		}
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { c["ban"] = true }), "power_levels", "ban is not an integer")
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) { c["ban"] = int64(50) }))
	})
}

// v10 9.2 / v12 10.2: events and notifications map to integers.
func TestAuthPowerLevels_9_2_EventsAndNotifications(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := plRoom(t, v)
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "events")["m.room.name"] = "50" }), "power_levels", `events["m.room.name"] is not an integer`)
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { c["notifications"] = "room" }), "power_levels", "notifications is not an object")
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "notifications")["room"] = "50" }), "power_levels", `notifications["room"] is not an integer`)
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "notifications")["room"] = int64(40) }))
	})
}

// v10 9.3 / v12 10.3: users maps valid user IDs to integers.
func TestAuthPowerLevels_9_3_Users(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := plRoom(t, v)
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "users")["dave"] = int64(0) }), "power_levels", `users key "dave" is not a valid user ID`)
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "users")[dave] = "10" }), "power_levels", `users["@dave:d.test"] is not an integer`)
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { c["users"] = []any{dave} }), "power_levels", "users is not an object")
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "users")["@dave:[::1]:8448"] = int64(10) }))
	})
}

// v12 10.4: creators cannot be listed in users; version 10 has no such
// rule.
func TestAuthPowerLevels_v12_10_4_CreatorListed(t *testing.T) {
	r := newRoom(t, version(t, "12"), roomstest.Options{AdditionalCreators: []string{carol}})
	for _, creator := range []string{alice, carol} {
		c := roomstest.WithUserLevel(r.PowerLevelsContent(), creator, 100)
		wantRejected(t, r, r.Build(roomstest.PowerLevels(alice, c)), "power_levels", "users lists "+creator+", a room creator")
	}
	wantAllowed(t, r, r.Build(roomstest.PowerLevels(alice, roomstest.WithUserLevel(r.PowerLevelsContent(), bob, 100))))

	r10 := newRoom(t, version(t, "10"), roomstest.Options{})
	if _, listed := subMap(r10.PowerLevelsContent(), "users")[alice]; !listed {
		t.Fatal("the v10 creator is not in the initial users")
	}
	wantAllowed(t, r10, r10.Build(roomstest.PowerLevels(alice, roomstest.WithUserLevel(r10.PowerLevelsContent(), alice, 100))))
}

// v10 9.4 / v12 10.5: the room's first power-levels event is allowed
// whatever it sets.
func TestAuthPowerLevels_9_4_FirstEvent(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := newRoom(t, v, roomstest.Options{Minimal: true})
		c := rooms.InitialPowerLevelsContent(v, alice)
		c["ban"] = int64(1000)
		subMap(c, "users")[bob] = int64(1000)
		wantAllowed(t, r, r.Build(roomstest.PowerLevels(alice, c)))
		// Once there is one, the same change is judged against it.
		r.SetPowerLevels(alice, rooms.InitialPowerLevelsContent(v, alice))
		if v.Creators == rooms.CreatorFromContent {
			wantRejected(t, r, r.Build(roomstest.PowerLevels(alice, c)), "power_levels", "ban: the new value 1000 is above the sender's power level 100")
		} else {
			wantAllowed(t, r, r.Build(roomstest.PowerLevels(alice, c)))
		}
	})
}

// v10 9.5 / v12 10.6: top-level levels added, changed or removed.
func TestAuthPowerLevels_9_5_TopLevel(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := plRoom(t, v)
		setLevels(r, func(c map[string]any) { c["kick"] = int64(75) })
		// Lowering a level at or below one's own is fine, as is removing one.
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) { c["ban"] = int64(40) }))
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) { delete(c, "redact") }))
		// The current value above the sender's.
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { c["kick"] = int64(50) }), "power_levels", "kick: the current value 75 is above the sender's power level 50")
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { delete(c, "kick") }), "power_levels", "kick: the current value 75")
		// The new value above the sender's (also when added).
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { c["ban"] = int64(60) }), "power_levels", "ban: the new value 60 is above the sender's power level 50")
		noInvite := r.Fork(setLevels(r, func(c map[string]any) { delete(c, "invite") }).EventID())
		wantRejected(t, noInvite, bobChanges(noInvite, func(c map[string]any) { c["invite"] = int64(51) }), "power_levels", "invite: the new value 51")
		wantAllowed(t, noInvite, bobChanges(noInvite, func(c map[string]any) { c["invite"] = int64(50) }))
	})
}

// v10 9.6 and 9.7 / v12 10.7 and 10.8: events and notifications entries.
func TestAuthPowerLevels_9_6_9_7_EventsEntries(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := plRoom(t, v)
		// 9.6: changing or removing an entry above the sender's level.
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "events")["m.room.server_acl"] = int64(50) }), "power_levels", `events["m.room.server_acl"]: the current value 100 is above the sender's power level 50`)
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { delete(subMap(c, "events"), "m.room.server_acl") }), "power_levels", `events["m.room.server_acl"]: the current value 100`)
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "events")["m.room.name"] = int64(0) }))
		// 9.7: adding or changing an entry to above the sender's level.
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "events")["org.example.x"] = int64(60) }), "power_levels", `events["org.example.x"]: the new value 60 is above`)
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "notifications")["room"] = int64(51) }), "power_levels", `notifications["room"]: the new value 51`)
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "events")["org.example.x"] = int64(50) }))
		setLevels(r, func(c map[string]any) { subMap(c, "notifications")["room"] = int64(80) })
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { delete(subMap(c, "notifications"), "room") }), "power_levels", `notifications["room"]: the current value 80`)
	})
}

// v10 9.8 / v12 10.9: changing or removing another user's entry needs the
// current value below the sender's; the sender's own entry is exempt, so
// users may demote themselves.
func TestAuthPowerLevels_9_8_UsersCurrentValue(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := plRoom(t, v)
		setUser(r, carol, 50)
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "users")[carol] = int64(0) }), "power_levels", `users["@carol:c.test"]: the current value 50 is not below the sender's power level 50`)
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { delete(subMap(c, "users"), carol) }), "power_levels", "the current value 50 is not below")
		setUser(r, carol, 40)
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "users")[carol] = int64(0) }))
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) { delete(subMap(c, "users"), carol) }))
		// Demoting oneself.
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "users")[bob] = int64(0) }))
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) { delete(subMap(c, "users"), bob) }))
	})
	t.Run("v10 creator demotes themselves", func(t *testing.T) {
		r := newRoom(t, version(t, "10"), roomstest.Options{})
		wantAllowed(t, r, r.Build(roomstest.PowerLevels(alice, roomstest.WithUserLevel(r.PowerLevelsContent(), alice, 0))))
	})
}

// v10 9.9 / v12 10.10: a user entry added or changed may not exceed the
// sender's level; raising someone to exactly the sender's level is allowed.
func TestAuthPowerLevels_9_9_UsersNewValue(t *testing.T) {
	eachVersion(t, func(t *testing.T, v rooms.Version) {
		r := plRoom(t, v)
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "users")[carol] = int64(50) }))
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "users")[carol] = int64(51) }), "power_levels", `users["@carol:c.test"]: the new value 51 is above the sender's power level 50`)
		wantRejected(t, r, bobChanges(r, func(c map[string]any) { subMap(c, "users")[bob] = int64(51) }), "power_levels", `users["@bob:b.test"]: the new value 51`)
		// 9.10: otherwise, allow (an unchanged event).
		wantAllowed(t, r, bobChanges(r, func(c map[string]any) {}))
	})
	t.Run("v12 creator raises anyone to any level", func(t *testing.T) {
		r := newRoom(t, version(t, "12"), roomstest.Options{})
		c := roomstest.WithUserLevel(r.PowerLevelsContent(), bob, 9007199254740991)
		c["ban"] = int64(9007199254740991)
		wantAllowed(t, r, r.Build(roomstest.PowerLevels(alice, c)))
	})
}
