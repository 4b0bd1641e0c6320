package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/gorilla/mux"
)

// scriptedMembership answers the membership handshakes with fixed events
// and records what it was given.
type scriptedMembership struct {
	*scriptedRooms
	mu       sync.Mutex
	versions []string
	invite   inviteBody
	left     []byte
}

type incompatible struct{ version string }

func (e *incompatible) Error() string                   { return "room version " + e.version + " not offered" }
func (e *incompatible) IncompatibleRoomVersion() string { return e.version }

const testTemplate = `{"content":{"membership":"join"},"type":"m.room.member"}`

func (s *scriptedMembership) MakeJoin(_ context.Context, _, _, _ string, versions []string) (string, []byte, error) {
	s.mu.Lock()
	s.versions = versions
	s.mu.Unlock()
	if !slices.Contains(versions, "12") {
		return "", nil, &incompatible{version: "12"}
	}
	return "12", []byte(testTemplate), nil
}

func (s *scriptedMembership) SendJoin(context.Context, string, string, string, []byte) ([][]byte, [][]byte, []byte, []string, error) {
	return [][]byte{[]byte(`{"s":1}`)}, [][]byte{[]byte(`{"c":1}`), []byte(`{"c":2}`)}, []byte(`{"j":1}`), []string{"a.test"}, nil
}

func (s *scriptedMembership) MakeKnock(_ context.Context, _, _, _ string, versions []string) (string, []byte, error) {
	return "12", []byte(`{"content":{"membership":"knock"}}`), nil
}

func (s *scriptedMembership) SendKnock(context.Context, string, string, string, []byte) ([][]byte, error) {
	return [][]byte{[]byte(`{"create":1}`)}, nil
}

func (s *scriptedMembership) MakeLeave(context.Context, string, string, string) (string, []byte, error) {
	return "10", []byte(`{"content":{"membership":"leave"}}`), nil
}

func (s *scriptedMembership) SendLeave(_ context.Context, _, _, _ string, event []byte) error {
	s.mu.Lock()
	s.left = event
	s.mu.Unlock()
	return nil
}

func (s *scriptedMembership) ReceiveInvite(_ context.Context, _, _, _, version string, event []byte, state [][]byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invite = inviteBody{RoomVersion: version, Event: event}
	for _, ev := range state {
		s.invite.InviteRoomState = append(s.invite.InviteRoomState, ev)
	}
	return []byte(`{"countersigned":true}`), nil
}

// TestMembershipEndpoints runs the client's membership methods against
// the server's handlers over authenticated federation.
func TestMembershipEndpoints(t *testing.T) {
	pki := newTestPKI(t)
	resident := newRoomNode(t, pki, "resident.test", 61)
	joiner := newRoomNode(t, pki, "joiner.test", 62)
	h := &scriptedMembership{scriptedRooms: newScriptedRooms()}
	resident.srv.Rooms = h
	r := mux.NewRouter().SkipClean(true).UseEncodedPath()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeError(w, r, ErrUnrecognized) })
	resident.srv.routes(r)
	resident.ts = httptest.NewUnstartedServer(resident.srv.logRequests(recoverPanics(r)))
	resident.ts.TLS = TLSConfig(pki.issue(t, resident.name))
	resident.ts.StartTLS()
	t.Cleanup(resident.ts.Close)
	joiner.start(t, pki, newScriptedRooms())
	linkNodes(resident, joiner)
	ctx := context.Background()
	const roomID, user = "!room:resident.test", "@bob:joiner.test"

	version, template, err := joiner.client.MakeJoin(ctx, resident.name, roomID, user, []string{"10", "12"})
	if err != nil || version != "12" || string(template) != testTemplate {
		t.Fatalf("make_join: %s %s %v", version, template, err)
	}
	var he *HTTPError
	_, _, err = joiner.client.MakeJoin(ctx, resident.name, roomID, user, []string{"10"})
	if !errors.As(err, &he) || he.Status != http.StatusBadRequest || he.ErrCode != "M_INCOMPATIBLE_ROOM_VERSION" {
		t.Fatalf("make_join without the room's version: %v", err)
	}
	_, _, err = joiner.client.MakeJoin(ctx, resident.name, roomID, "@alice:resident.test", []string{"12"})
	if !errors.As(err, &he) || he.Status != http.StatusForbidden {
		t.Fatalf("make_join for another server's user: %v", err)
	}
	// Without ver the spec's default applies.
	_, err = joiner.client.Do(ctx, Request{Method: http.MethodGet, Destination: resident.name, Path: roomPath("/_matrix/federation/v1/make_join", roomID, user)})
	if !errors.As(err, &he) || he.ErrCode != "M_INCOMPATIBLE_ROOM_VERSION" {
		t.Fatalf("make_join without ver: %v", err)
	}
	h.mu.Lock()
	if !slices.Equal(h.versions, []string{"1"}) {
		t.Errorf("versions without ver: %v", h.versions)
	}
	h.mu.Unlock()

	state, chain, join, err := joiner.client.SendJoin(ctx, resident.name, roomID, "$join", []byte(`{"j":1}`))
	if err != nil || len(state) != 1 || len(chain) != 2 || string(join) != `{"j":1}` {
		t.Fatalf("send_join: %d state, %d chain, %s, %v", len(state), len(chain), join, err)
	}

	if version, _, err := joiner.client.MakeLeave(ctx, resident.name, roomID, user); err != nil || version != "10" {
		t.Fatalf("make_leave: %s %v", version, err)
	}
	if err := joiner.client.SendLeave(ctx, resident.name, roomID, "$leave", []byte(`{"l":1}`)); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	if string(h.left) != `{"l":1}` {
		t.Errorf("send_leave body %s", h.left)
	}
	h.mu.Unlock()

	if version, _, err := joiner.client.MakeKnock(ctx, resident.name, roomID, user, []string{"12"}); err != nil || version != "12" {
		t.Fatalf("make_knock: %s %v", version, err)
	}
	_, err = joiner.client.Do(ctx, Request{Method: http.MethodGet, Destination: resident.name, Path: roomPath("/_matrix/federation/v1/make_knock", roomID, user)})
	if !errors.As(err, &he) || he.Status != http.StatusBadRequest || he.ErrCode != "M_MISSING_PARAM" {
		t.Fatalf("make_knock without ver: %v", err)
	}
	if state, err := joiner.client.SendKnock(ctx, resident.name, roomID, "$knock", []byte(`{"k":1}`)); err != nil || len(state) != 1 {
		t.Fatalf("send_knock: %d events, %v", len(state), err)
	}

	signed, err := joiner.client.SendInvite(ctx, resident.name, roomID, "$invite", "12", []byte(`{"i":1}`), [][]byte{[]byte(`{"create":1}`)})
	if err != nil || string(signed) != `{"countersigned":true}` {
		t.Fatalf("invite: %s %v", signed, err)
	}
	h.mu.Lock()
	if h.invite.RoomVersion != "12" || string(h.invite.Event) != `{"i":1}` || len(h.invite.InviteRoomState) != 1 {
		t.Errorf("invite as received: %+v", h.invite)
	}
	h.mu.Unlock()
}

// TestIncompatibleVersionAnswer: the error names the room's version.
func TestIncompatibleVersionAnswer(t *testing.T) {
	rec := httptest.NewRecorder()
	writeError(rec, httptest.NewRequest(http.MethodGet, "/", nil), incompatibleVersion(&incompatible{version: "12"}))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusBadRequest || body["errcode"] != "M_INCOMPATIBLE_ROOM_VERSION" || body["room_version"] != "12" {
		t.Fatalf("%d %v", rec.Code, body)
	}
}

type codedRefusal struct{}

func (codedRefusal) Error() string         { return "nobody here may authorise the join" }
func (codedRefusal) MatrixErrCode() string { return "M_UNABLE_TO_GRANT_JOIN" }

// TestCodedRefusalAnswer: an engine error with its own Matrix code keeps it.
func TestCodedRefusalAnswer(t *testing.T) {
	rec := httptest.NewRecorder()
	writeError(rec, httptest.NewRequest(http.MethodGet, "/", nil), incompatibleVersion(codedRefusal{}))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusBadRequest || body["errcode"] != "M_UNABLE_TO_GRANT_JOIN" {
		t.Fatalf("%d %v", rec.Code, body)
	}
}
