package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

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

// membershipRoutes registers make_join and send_join when the room
// handler answers them.
func (s *Server) membershipRoutes(r *mux.Router) {
	h, ok := s.Rooms.(MembershipHandler)
	if !ok {
		return
	}
	r.Handle("/_matrix/federation/v1/make_join/{roomId}/{userId}", s.handle(s.authed(handleMakeJoin(h)))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v2/send_join/{roomId}/{eventId}", s.handle(s.authed(handleSendJoin(h)))).Methods(http.MethodPut)
}

// incompatibleVersion turns an engine error naming an unsupported room
// version into the spec's 400 M_INCOMPATIBLE_ROOM_VERSION.
func incompatibleVersion(err error) error {
	var iv interface{ IncompatibleRoomVersion() string }
	if errors.As(err, &iv) {
		return &MatrixError{Status: http.StatusBadRequest, Code: "M_INCOMPATIBLE_ROOM_VERSION", Message: err.Error(),
			Extra: map[string]any{"room_version": iv.IncompatibleRoomVersion()}}
	}
	return err
}

// handleMakeJoin answers GET /v1/make_join/{roomId}/{userId}?ver=...: the
// user must be one of the requesting server's; without ver the spec's
// default ["1"] applies.
func handleMakeJoin(h MembershipHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		roomID, userID := pathVar(r, "roomId"), pathVar(r, "userId")
		server, err := serverOfID(userID, '@')
		if err != nil {
			return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "user ID: %v", err)
		}
		if server != in.Origin {
			return Errorf(http.StatusForbidden, "M_FORBIDDEN", "user %s is not a user of %s", userID, in.Origin)
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
		body := map[string]any{
			"state":           rawEvents(state),
			"auth_chain":      rawEvents(chain),
			"members_omitted": false,
			"servers_in_room": nonNil(servers),
		}
		if len(join) > 0 {
			body["event"] = json.RawMessage(join)
		}
		writeJSON(w, http.StatusOK, body)
		return nil
	}
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
	var body struct {
		RoomVersion *string         `json:"room_version"`
		Event       json.RawMessage `json:"event"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return "", nil, fmt.Errorf("make_join from %s: %w", server, err)
	}
	if len(body.Event) == 0 || body.Event[0] != '{' {
		return "", nil, fmt.Errorf("make_join from %s: the answer has no event object", server)
	}
	version := "1"
	if body.RoomVersion != nil {
		version = *body.RoomVersion
	}
	return version, body.Event, nil
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
	if state, err = eventList(raw, "state"); err != nil {
		return nil, nil, nil, fmt.Errorf("send_join from %s: %w", server, err)
	}
	if authChain, err = eventList(raw, "auth_chain"); err != nil {
		return nil, nil, nil, fmt.Errorf("send_join from %s: %w", server, err)
	}
	var body struct {
		Event json.RawMessage `json:"event"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, nil, nil, fmt.Errorf("send_join from %s: %w", server, err)
	}
	if len(body.Event) > 0 && body.Event[0] == '{' {
		join = body.Event
	}
	return state, authChain, join, nil
}
