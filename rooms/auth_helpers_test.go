package rooms_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
)

const (
	alice = roomstest.Alice
	ann   = roomstest.Ann
	bob   = roomstest.Bob
	carol = roomstest.Carol
	dave  = roomstest.Dave
)

func version(t testing.TB, id string) rooms.Version {
	t.Helper()
	v, err := rooms.LookupVersion(id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// eachVersion runs fn as a subtest for room versions 10 and 12.
func eachVersion(t *testing.T, fn func(t *testing.T, v rooms.Version)) {
	t.Helper()
	for _, id := range []string{"10", "12"} {
		v := version(t, id)
		t.Run("v"+id, func(t *testing.T) { fn(t, v) })
	}
}

// newRoom builds a room of version v with tb reporting failures.
func newRoom(t *testing.T, v rooms.Version, opts roomstest.Options) *roomstest.Room {
	t.Helper()
	return roomstest.NewRoom(t, v, opts)
}

// judge runs both entry points on ev, which was built on r's current state:
// CheckAuth against that state and CheckAuthEvents against ev's own auth
// events. The builder draws the auth events from the same state, so the
// verdicts must agree.
func judge(t *testing.T, r *roomstest.Room, ev *rooms.Event) error {
	t.Helper()
	byState := rooms.CheckAuth(ev, r.State())
	byAuth := rooms.CheckAuthEvents(ev, r.AuthEventsOf(ev), r.Create(), nil)
	if (byState == nil) != (byAuth == nil) || byState != nil && byState.Error() != byAuth.Error() {
		t.Fatalf("CheckAuth says %v but CheckAuthEvents says %v", byState, byAuth)
	}
	return byState
}

func wantAllowed(t *testing.T, r *roomstest.Room, ev *rooms.Event) {
	t.Helper()
	if err := judge(t, r, ev); err != nil {
		t.Fatalf("%s from %s: want allowed, got %v", ev.Type(), ev.Sender(), err)
	}
}

func wantRejected(t *testing.T, r *roomstest.Room, ev *rooms.Event, rule, reason string) {
	t.Helper()
	wantAuthError(t, ev, judge(t, r, ev), rule, reason)
}

// wantAuthError checks that err is an *AuthError for ev with the given rule
// and a reason containing the given text.
func wantAuthError(t *testing.T, ev *rooms.Event, err error, rule, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s from %s: want rejected by %q, got allowed", ev.Type(), ev.Sender(), rule)
	}
	var ae *rooms.AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *AuthError", err, err)
	}
	if !errors.Is(err, rooms.ErrNotAuthorized) {
		t.Errorf("error %v does not match ErrNotAuthorized", err)
	}
	if ae.EventID != ev.EventID() {
		t.Errorf("AuthError.EventID = %s, want %s", ae.EventID, ev.EventID())
	}
	if ae.Rule != rule || !strings.Contains(ae.Reason, reason) {
		t.Fatalf("got %q, want rule %q with reason containing %q", err.Error(), rule, reason)
	}
	if err.Error() != ae.Rule+": "+ae.Reason {
		t.Errorf("Error() = %q, want rule: reason", err.Error())
	}
}

// setLevels changes the room's power levels as its creator.
func setLevels(r *roomstest.Room, mutate func(c map[string]any)) *rooms.Event {
	r.TB().Helper()
	c := r.PowerLevelsContent()
	mutate(c)
	return r.SetPowerLevels(r.Creator, c)
}

// setUser sets users[user] in the room's power levels, as its creator.
func setUser(r *roomstest.Room, user string, level int64) *rooms.Event {
	r.TB().Helper()
	return r.SetPowerLevels(r.Creator, roomstest.WithUserLevel(r.PowerLevelsContent(), user, level))
}

func subMap(c map[string]any, key string) map[string]any {
	m, _ := c[key].(map[string]any)
	if m == nil {
		m = map[string]any{}
		c[key] = m
	}
	return m
}

// ids returns the event IDs of evs.
func ids(evs ...*rooms.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.EventID()
	}
	return out
}
