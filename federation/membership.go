package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/gorilla/mux"
)

// MembershipHandler is the room engine's side of the membership
// handshakes other servers start: make_join and send_join. The Server
// serves them when its Rooms handler also implements this interface.
// Errors are classified as for RoomHandler; an error with an
// IncompatibleRoomVersion() string method becomes 400
// M_INCOMPATIBLE_ROOM_VERSION carrying that room version.
type MembershipHandler interface {
	// MakeJoin returns the room's version and an unsigned join template
	// for userID, a user of origin, if the room's version is one of
	// versions and the user may join.
	MakeJoin(ctx context.Context, origin, roomID, userID string, versions []string) (roomVersion string, template []byte, err error)
	// SendJoin accepts the signed join of a user of origin and returns
	// the room state before it, the auth chain of that state and of the
	// join, the join as stored and the servers in the room.
	SendJoin(ctx context.Context, origin, roomID, eventID string, event []byte) (state, authChain [][]byte, join []byte, serversInRoom []string, err error)
}

// LeaveHandler is the room engine's side of make_leave and send_leave;
// errors as for MembershipHandler.
type LeaveHandler interface {
	// MakeLeave returns the room's version and an unsigned leave template
	// for userID, a user of origin who may leave.
	MakeLeave(ctx context.Context, origin, roomID, userID string) (roomVersion string, template []byte, err error)
	// SendLeave accepts the signed leave of a user of origin.
	SendLeave(ctx context.Context, origin, roomID, eventID string, event []byte) error
}

// InviteHandler is the room engine's side of PUT /v2/invite; errors as
// for MembershipHandler.
type InviteHandler interface {
	// ReceiveInvite checks an invite of one of our users sent by a user of
	// origin, with the room state offered to the invitee (full PDUs), and
	// returns the event with our signature added.
	ReceiveInvite(ctx context.Context, origin, roomID, eventID, roomVersion string, event []byte, inviteRoomState [][]byte) ([]byte, error)
}

// KnockHandler is the room engine's side of make_knock and send_knock;
// errors as for MembershipHandler.
type KnockHandler interface {
	// MakeKnock returns the room's version and an unsigned knock
	// template for userID, a user of origin, if the room's version is one
	// of versions and the user may knock.
	MakeKnock(ctx context.Context, origin, roomID, userID string, versions []string) (roomVersion string, template []byte, err error)
	// SendKnock accepts the signed knock of a user of origin and returns
	// the room state shown to knockers (full PDUs, the create event among
	// them).
	SendKnock(ctx context.Context, origin, roomID, eventID string, event []byte) (knockRoomState [][]byte, err error)
}

// membershipRoutes registers the membership handshakes the room handler
// answers: make_join and send_join, make_leave and send_leave, make_knock
// and send_knock, invite.
func (s *Server) membershipRoutes(r *mux.Router) {
	if h, ok := s.Rooms.(MembershipHandler); ok {
		r.Handle("/_matrix/federation/v1/make_join/{roomId}/{userId}", s.handle(s.authed(handleMakeJoin(h)))).Methods(http.MethodGet)
		r.Handle("/_matrix/federation/v2/send_join/{roomId}/{eventId}", s.handle(s.authed(handleSendJoinOmitting(h)))).Methods(http.MethodPut)
	}
	if h, ok := s.Rooms.(LeaveHandler); ok {
		r.Handle("/_matrix/federation/v1/make_leave/{roomId}/{userId}", s.handle(s.authed(handleMakeLeave(h)))).Methods(http.MethodGet)
		r.Handle("/_matrix/federation/v2/send_leave/{roomId}/{eventId}", s.handle(s.authed(handleSendLeave(h)))).Methods(http.MethodPut)
	}
	if h, ok := s.Rooms.(KnockHandler); ok {
		r.Handle("/_matrix/federation/v1/make_knock/{roomId}/{userId}", s.handle(s.authed(handleMakeKnock(h)))).Methods(http.MethodGet)
		r.Handle("/_matrix/federation/v1/send_knock/{roomId}/{eventId}", s.handle(s.authed(handleSendKnock(h)))).Methods(http.MethodPut)
	}
	if h, ok := s.Rooms.(InviteHandler); ok {
		r.Handle("/_matrix/federation/v2/invite/{roomId}/{eventId}", s.handle(s.authed(handleInvite(h)))).Methods(http.MethodPut)
	}
}

// checkUserOfOrigin refuses a handshake for a user of another server.
func checkUserOfOrigin(userID, origin string) error {
	server, err := serverOfID(userID, '@')
	if err != nil {
		return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "user ID: %v", err)
	}
	if server != origin {
		return Errorf(http.StatusForbidden, "M_FORBIDDEN", "user %s is not a user of %s", userID, origin)
	}
	return nil
}

// incompatibleVersion turns an engine error naming an unsupported room
// version into the spec's 400 M_INCOMPATIBLE_ROOM_VERSION, and a 400 with
// its own Matrix error code (MatrixErrCode() string, such as
// M_UNABLE_TO_GRANT_JOIN) into that code.
func incompatibleVersion(err error) error {
	var iv interface{ IncompatibleRoomVersion() string }
	if errors.As(err, &iv) {
		return &MatrixError{Status: http.StatusBadRequest, Code: "M_INCOMPATIBLE_ROOM_VERSION", Message: err.Error(),
			Extra: map[string]any{"room_version": iv.IncompatibleRoomVersion()}}
	}
	var coded interface{ MatrixErrCode() string }
	if errors.As(err, &coded) && strings.HasPrefix(coded.MatrixErrCode(), "M_") {
		return &MatrixError{Status: http.StatusBadRequest, Code: coded.MatrixErrCode(), Message: err.Error()}
	}
	return err
}

// handleMakeJoin answers GET /v1/make_join/{roomId}/{userId}?ver=...: the
// user must be one of the requesting server's; without ver the spec's
// default ["1"] applies.
func handleMakeJoin(h MembershipHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		roomID, userID := pathVar(r, "roomId"), pathVar(r, "userId")
		if err := checkUserOfOrigin(userID, in.Origin); err != nil {
			return err
		}
		versions := r.URL.Query()["ver"]
		if len(versions) == 0 {
			versions = []string{"1"}
		}
		version, template, err := h.MakeJoin(r.Context(), in.Origin, roomID, userID, versions)
		if err != nil {
			return incompatibleVersion(err)
		}
		writeJSON(w, http.StatusOK, map[string]any{"room_version": version, "event": json.RawMessage(template)})
		return nil
	}
}

// handleSendJoin answers PUT /v2/send_join/{roomId}/{eventId}. The body is
// the signed join; omit_members is ignored (the full state is sent).
func handleSendJoin(h MembershipHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		if len(in.Body) == 0 {
			return Errorf(http.StatusBadRequest, "M_NOT_JSON", "the body must be the join event")
		}
		state, chain, join, servers, err := h.SendJoin(r.Context(), in.Origin, pathVar(r, "roomId"), pathVar(r, "eventId"), in.Body)
		if err != nil {
			return incompatibleVersion(err)
		}
		writeSendJoinAnswer(w, state, chain, join, servers, false)
		return nil
	}
}

// writeSendJoinAnswer writes a send_join v2 answer.
func writeSendJoinAnswer(w http.ResponseWriter, state, chain [][]byte, join []byte, servers []string, omitted bool) {
	body := map[string]any{
		"state":           rawEvents(state),
		"auth_chain":      rawEvents(chain),
		"members_omitted": omitted,
		"servers_in_room": nonNil(servers),
	}
	if len(join) > 0 {
		body["event"] = json.RawMessage(join)
	}
	writeJSON(w, http.StatusOK, body)
}

// maxSendJoinResponseBytes bounds a send_join answer: the whole state of
// a large room with its auth chain.
const maxSendJoinResponseBytes = 512 << 20

// MakeJoin asks server for a join template for userID (GET
// /v1/make_join), offering versions. It returns the room version (the
// spec's "1" when the answer names none) and the template's JSON.
func (c *Client) MakeJoin(ctx context.Context, server, roomID, userID string, versions []string) (string, []byte, error) {
	raw, err := c.Do(ctx, Request{
		Method: http.MethodGet, Destination: server, Path: roomPath("/_matrix/federation/v1/make_join", roomID, userID),
		Query: url.Values{"ver": versions}, MaxResponseBytes: maxQueryResponseBytes,
	})
	if err != nil {
		return "", nil, err
	}
	return templateAnswer(raw, "make_join", server)
}

// SendJoin sends a signed join to server (PUT /v2/send_join) and returns
// the room state and auth chain of the answer, and its "event" (the join
// as the resident stored it, possibly with its signature added), nil when
// absent.
func (c *Client) SendJoin(ctx context.Context, server, roomID, eventID string, event []byte) (state, authChain [][]byte, join []byte, err error) {
	raw, err := c.Do(ctx, Request{
		Method: http.MethodPut, Destination: server, Path: roomPath("/_matrix/federation/v2/send_join", roomID, eventID),
		Body: json.RawMessage(event), MaxResponseBytes: maxSendJoinResponseBytes,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	// One decoding of what can be a very large answer (the whole state
	// of a big room and its auth chain): each event is copied once.
	var body struct {
		State     []json.RawMessage `json:"state"`
		AuthChain []json.RawMessage `json:"auth_chain"`
		Event     json.RawMessage   `json:"event"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, nil, nil, fmt.Errorf("send_join from %s: %w", server, err)
	}
	if body.State == nil {
		return nil, nil, nil, fmt.Errorf("send_join from %s: response has no state array", server)
	}
	if body.AuthChain == nil {
		return nil, nil, nil, fmt.Errorf("send_join from %s: response has no auth_chain array", server)
	}
	state = make([][]byte, len(body.State))
	for i, ev := range body.State {
		state[i] = ev
	}
	authChain = make([][]byte, len(body.AuthChain))
	for i, ev := range body.AuthChain {
		authChain[i] = ev
	}
	if len(body.Event) > 0 && body.Event[0] == '{' {
		join = body.Event
	}
	return state, authChain, join, nil
}

// handleMakeLeave answers GET /v1/make_leave/{roomId}/{userId}.
func handleMakeLeave(h LeaveHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		roomID, userID := pathVar(r, "roomId"), pathVar(r, "userId")
		if err := checkUserOfOrigin(userID, in.Origin); err != nil {
			return err
		}
		version, template, err := h.MakeLeave(r.Context(), in.Origin, roomID, userID)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"room_version": version, "event": json.RawMessage(template)})
		return nil
	}
}

// handleSendLeave answers PUT /v2/send_leave/{roomId}/{eventId} with {}.
func handleSendLeave(h LeaveHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		if len(in.Body) == 0 {
			return Errorf(http.StatusBadRequest, "M_NOT_JSON", "the body must be the leave event")
		}
		if err := h.SendLeave(r.Context(), in.Origin, pathVar(r, "roomId"), pathVar(r, "eventId"), in.Body); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{})
		return nil
	}
}

// inviteBody is the body of PUT /v2/invite.
type inviteBody struct {
	RoomVersion     string            `json:"room_version"`
	Event           json.RawMessage   `json:"event"`
	InviteRoomState []json.RawMessage `json:"invite_room_state"`
}

// handleInvite answers PUT /v2/invite/{roomId}/{eventId} with the event
// countersigned.
func handleInvite(h InviteHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		var body inviteBody
		if err := json.Unmarshal(in.Body, &body); err != nil {
			return Errorf(http.StatusBadRequest, "M_BAD_JSON", "invite body: %v", err)
		}
		if body.RoomVersion == "" || len(body.Event) == 0 {
			return Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "room_version and event are required")
		}
		state := make([][]byte, len(body.InviteRoomState))
		for i, ev := range body.InviteRoomState {
			state[i] = ev
		}
		signed, err := h.ReceiveInvite(r.Context(), in.Origin, pathVar(r, "roomId"), pathVar(r, "eventId"), body.RoomVersion, body.Event, state)
		if err != nil {
			return incompatibleVersion(err)
		}
		writeJSON(w, http.StatusOK, map[string]any{"event": json.RawMessage(signed)})
		return nil
	}
}

// MakeLeave asks server for a leave template for userID (GET
// /v1/make_leave) and returns the room version and the template's JSON.
func (c *Client) MakeLeave(ctx context.Context, server, roomID, userID string) (string, []byte, error) {
	raw, err := c.Do(ctx, Request{
		Method: http.MethodGet, Destination: server, Path: roomPath("/_matrix/federation/v1/make_leave", roomID, userID),
		MaxResponseBytes: maxQueryResponseBytes,
	})
	if err != nil {
		return "", nil, err
	}
	return templateAnswer(raw, "make_leave", server)
}

// templateAnswer decodes a make_join or make_leave answer.
func templateAnswer(raw []byte, what, server string) (string, []byte, error) {
	var body struct {
		RoomVersion *string         `json:"room_version"`
		Event       json.RawMessage `json:"event"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return "", nil, fmt.Errorf("%s from %s: %w", what, server, err)
	}
	if len(body.Event) == 0 || body.Event[0] != '{' {
		return "", nil, fmt.Errorf("%s from %s: the answer has no event object", what, server)
	}
	version := "1"
	if body.RoomVersion != nil {
		version = *body.RoomVersion
	}
	return version, body.Event, nil
}

// SendLeave sends a signed leave to server (PUT /v2/send_leave).
func (c *Client) SendLeave(ctx context.Context, server, roomID, eventID string, event []byte) error {
	_, err := c.Do(ctx, Request{
		Method: http.MethodPut, Destination: server, Path: roomPath("/_matrix/federation/v2/send_leave", roomID, eventID),
		Body: json.RawMessage(event), MaxResponseBytes: maxQueryResponseBytes,
	})
	return err
}

// SendInvite sends an invite to the invitee's server (PUT /v2/invite)
// with the room state offered to the invitee, and returns the event the
// server countersigned.
func (c *Client) SendInvite(ctx context.Context, server, roomID, eventID, roomVersion string, event []byte, inviteRoomState [][]byte) ([]byte, error) {
	state := make([]json.RawMessage, len(inviteRoomState))
	for i, ev := range inviteRoomState {
		state[i] = ev
	}
	raw, err := c.Do(ctx, Request{
		Method: http.MethodPut, Destination: server, Path: roomPath("/_matrix/federation/v2/invite", roomID, eventID),
		Body: inviteBody{RoomVersion: roomVersion, Event: event, InviteRoomState: state}, MaxResponseBytes: maxQueryResponseBytes,
	})
	if err != nil {
		return nil, err
	}
	var body struct {
		Event json.RawMessage `json:"event"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, fmt.Errorf("invite to %s: %w", server, err)
	}
	if len(body.Event) == 0 || body.Event[0] != '{' {
		return nil, fmt.Errorf("invite to %s: the answer has no event object", server)
	}
	return body.Event, nil
}

// ResolveRoomAlias asks the alias's server what it points to (GET
// /query/directory) and returns the room ID and the servers to join
// through; QueryDirectory in the shape the room engine asks for.
func (c *Client) ResolveRoomAlias(ctx context.Context, alias string) (string, []string, error) {
	entry, err := c.QueryDirectory(ctx, alias)
	if err != nil {
		return "", nil, err
	}
	return entry.RoomID, entry.Servers, nil
}

// handleMakeKnock answers GET /v1/make_knock/{roomId}/{userId}?ver=...;
// ver is required.
func handleMakeKnock(h KnockHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		roomID, userID := pathVar(r, "roomId"), pathVar(r, "userId")
		if err := checkUserOfOrigin(userID, in.Origin); err != nil {
			return err
		}
		versions := r.URL.Query()["ver"]
		if len(versions) == 0 {
			return Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "ver is required")
		}
		version, template, err := h.MakeKnock(r.Context(), in.Origin, roomID, userID, versions)
		if err != nil {
			return incompatibleVersion(err)
		}
		writeJSON(w, http.StatusOK, map[string]any{"room_version": version, "event": json.RawMessage(template)})
		return nil
	}
}

// handleSendKnock answers PUT /v1/send_knock/{roomId}/{eventId}.
func handleSendKnock(h KnockHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		if len(in.Body) == 0 {
			return Errorf(http.StatusBadRequest, "M_NOT_JSON", "the body must be the knock event")
		}
		state, err := h.SendKnock(r.Context(), in.Origin, pathVar(r, "roomId"), pathVar(r, "eventId"), in.Body)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"knock_room_state": rawEvents(state)})
		return nil
	}
}

// MakeKnock asks server for a knock template for userID (GET
// /v1/make_knock), offering versions.
func (c *Client) MakeKnock(ctx context.Context, server, roomID, userID string, versions []string) (string, []byte, error) {
	raw, err := c.Do(ctx, Request{
		Method: http.MethodGet, Destination: server, Path: roomPath("/_matrix/federation/v1/make_knock", roomID, userID),
		Query: url.Values{"ver": versions}, MaxResponseBytes: maxQueryResponseBytes,
	})
	if err != nil {
		return "", nil, err
	}
	return templateAnswer(raw, "make_knock", server)
}

// SendKnock sends a signed knock to server (PUT /v1/send_knock) and
// returns knock_room_state.
func (c *Client) SendKnock(ctx context.Context, server, roomID, eventID string, event []byte) ([][]byte, error) {
	raw, err := c.Do(ctx, Request{
		Method: http.MethodPut, Destination: server, Path: roomPath("/_matrix/federation/v1/send_knock", roomID, eventID),
		Body: json.RawMessage(event), MaxResponseBytes: maxQueryResponseBytes,
	})
	if err != nil {
		return nil, err
	}
	state, err := eventList(raw, "knock_room_state")
	if err != nil {
		return nil, fmt.Errorf("send_knock from %s: %w", server, err)
	}
	return state, nil
}
