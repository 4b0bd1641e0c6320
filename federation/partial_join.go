package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// PartialJoinHandler is the room engine's side of send_join for callers
// that ask for partial state (?omit_members=true). The Server uses it in
// place of MembershipHandler.SendJoin when the room handler implements it.
type PartialJoinHandler interface {
	// SendJoinOmitting accepts the signed join of a user of origin, as
	// MembershipHandler.SendJoin does. With omitMembers, the engine may
	// leave out of state the membership events the spec lets it omit
	// (and from the auth chain the events already in state); it says so
	// with membersOmitted.
	SendJoinOmitting(ctx context.Context, origin, roomID, eventID string, event []byte, omitMembers bool) (state, authChain [][]byte, join []byte, serversInRoom []string, membersOmitted bool, err error)
}

// omitMembersParam reads send_join's omit_members query parameter:
// absent is false, and only "true" and "false" are allowed.
func omitMembersParam(r *http.Request) (bool, error) {
	switch v := r.URL.Query().Get("omit_members"); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "omit_members must be true or false, not %q", v)
	}
}

// handleSendJoinOmitting answers PUT /v2/send_join/{roomId}/{eventId}
// with omit_members honoured when the room handler implements
// PartialJoinHandler, and as handleSendJoin does otherwise (full state,
// members_omitted false).
func handleSendJoinOmitting(h MembershipHandler) authedHandlerFunc {
	full := handleSendJoin(h)
	ph, partial := h.(PartialJoinHandler)
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		omit, err := omitMembersParam(r)
		if err != nil {
			return err
		}
		if !partial {
			return full(w, r, in)
		}
		if len(in.Body) == 0 {
			return Errorf(http.StatusBadRequest, "M_NOT_JSON", "the body must be the join event")
		}
		state, chain, join, servers, omitted, err := ph.SendJoinOmitting(r.Context(), in.Origin, pathVar(r, "roomId"), pathVar(r, "eventId"), in.Body, omit)
		if err != nil {
			return incompatibleVersion(err)
		}
		writeSendJoinAnswer(w, state, chain, join, servers, omitted)
		return nil
	}
}

// SendJoinOmitMembers sends a signed join to server (PUT /v2/send_join
// with omit_members=true) and returns the answer's state and auth chain,
// its "event" (nil when absent), members_omitted (the state lacks
// membership events: the caller has partial state and fetches the full
// state later) and servers_in_room, which the spec requires with
// members_omitted. A resident that ignores the parameter answers with the
// full state and membersOmitted false.
func (c *Client) SendJoinOmitMembers(ctx context.Context, server, roomID, eventID string, event []byte) (state, authChain [][]byte, join []byte, membersOmitted bool, serversInRoom []string, err error) {
	raw, err := c.Do(ctx, Request{
		Method: http.MethodPut, Destination: server, Path: roomPath("/_matrix/federation/v2/send_join", roomID, eventID),
		Query: url.Values{"omit_members": {"true"}}, Body: json.RawMessage(event), MaxResponseBytes: maxSendJoinResponseBytes,
	})
	if err != nil {
		return nil, nil, nil, false, nil, err
	}
	var body struct {
		State          []json.RawMessage `json:"state"`
		AuthChain      []json.RawMessage `json:"auth_chain"`
		Event          json.RawMessage   `json:"event"`
		MembersOmitted bool              `json:"members_omitted"`
		ServersInRoom  []string          `json:"servers_in_room"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, nil, nil, false, nil, fmt.Errorf("send_join from %s: %w", server, err)
	}
	if body.State == nil || body.AuthChain == nil {
		return nil, nil, nil, false, nil, fmt.Errorf("send_join from %s: state and auth_chain are required", server)
	}
	if body.MembersOmitted && body.ServersInRoom == nil {
		return nil, nil, nil, false, nil, fmt.Errorf("send_join from %s: members_omitted without servers_in_room", server)
	}
	if len(body.Event) > 0 && body.Event[0] == '{' {
		join = body.Event
	}
	return rawList(body.State), rawList(body.AuthChain), join, body.MembersOmitted, body.ServersInRoom, nil
}

// FullState asks server for the state before eventID with its auth chain
// (GET /state), allowing an answer as large as a send_join's: a partial-
// state room's resync fetches the whole state of a large room this way.
func (c *Client) FullState(ctx context.Context, server, roomID, eventID string) (state, authChain [][]byte, err error) {
	raw, err := c.Do(ctx, Request{
		Method: http.MethodGet, Destination: server, Path: roomPath("/_matrix/federation/v1/state", roomID),
		Query: url.Values{"event_id": {eventID}}, MaxResponseBytes: maxSendJoinResponseBytes,
	})
	if err != nil {
		return nil, nil, err
	}
	var body struct {
		PDUs      []json.RawMessage `json:"pdus"`
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, nil, fmt.Errorf("state from %s: %w", server, err)
	}
	if body.PDUs == nil || body.AuthChain == nil {
		return nil, nil, fmt.Errorf("state from %s: pdus and auth_chain are required", server)
	}
	return rawList(body.PDUs), rawList(body.AuthChain), nil
}

// rawList converts decoded raw messages to byte slices without copying.
func rawList(list []json.RawMessage) [][]byte {
	out := make([][]byte, len(list))
	for i, ev := range list {
		out[i] = ev
	}
	return out
}
