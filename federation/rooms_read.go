package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gorilla/mux"
)

// roomRoutes registers the endpoints served by the room engine h:
// transactions and the reads of room history, all behind X-Matrix.
func (s *Server) roomRoutes(r *mux.Router, h RoomHandler) {
	serial := &originSerial{}
	send := s.handle(s.authed(handleSend(h, serial)))
	r.Handle("/_matrix/federation/v1/send/{txnId}", send).Methods(http.MethodPut)
	// Some servers send transactions with a trailing slash.
	r.Handle("/_matrix/federation/v1/send/{txnId}/", send).Methods(http.MethodPut)
	r.Handle("/_matrix/federation/v1/event/{eventId}", s.handle(s.authed(s.handleEvent(h)))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/state/{roomId}", s.handle(s.authed(handleState(h)))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/state_ids/{roomId}", s.handle(s.authed(handleStateIDs(h)))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/event_auth/{roomId}/{eventId}", s.handle(s.authed(handleEventAuth(h)))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/backfill/{roomId}", s.handle(s.authed(s.handleBackfill(h)))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/get_missing_events/{roomId}", s.handle(s.authed(handleMissingEvents(h)))).Methods(http.MethodPost)
	r.Handle("/_matrix/federation/v1/timestamp_to_event/{roomId}", s.handle(s.authed(handleTimestampToEvent(h)))).Methods(http.MethodGet)
}

// handleTimestampToEvent answers GET /timestamp_to_event/{roomId}?ts=&dir=.
func handleTimestampToEvent(h RoomHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		q := r.URL.Query()
		ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
		if err != nil || ts < 0 {
			return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "ts must be a non-negative integer of milliseconds")
		}
		var forward bool
		switch q.Get("dir") {
		case "f":
			forward = true
		case "b":
		default:
			return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "dir must be f or b")
		}
		id, eventTS, err := h.TimestampToEvent(r.Context(), in.Origin, pathVar(r, "roomId"), ts, forward)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"event_id": id, "origin_server_ts": eventTS})
		return nil
	}
}

// TimestampToEvent asks server for the event of roomID closest to ts
// (GET /timestamp_to_event), at or after it when forward.
func (c *Client) TimestampToEvent(ctx context.Context, server, roomID string, ts int64, forward bool) (eventID string, eventTS int64, err error) {
	dir := "b"
	if forward {
		dir = "f"
	}
	raw, err := c.Do(ctx, Request{
		Method: http.MethodGet, Destination: server, Path: roomPath("/_matrix/federation/v1/timestamp_to_event", roomID),
		Query: url.Values{"ts": {strconv.FormatInt(ts, 10)}, "dir": {dir}},
	})
	if err != nil {
		return "", 0, err
	}
	var body struct {
		EventID        string `json:"event_id"`
		OriginServerTS int64  `json:"origin_server_ts"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return "", 0, fmt.Errorf("timestamp_to_event from %s: %w", server, err)
	}
	if body.EventID == "" {
		return "", 0, fmt.Errorf("timestamp_to_event from %s: event_id is missing", server)
	}
	return body.EventID, body.OriginServerTS, nil
}

// rawEvents wraps event JSON for encoding without re-parsing.
func rawEvents(evs [][]byte) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, ev := range evs {
		out[i] = ev
	}
	return out
}

// nonNil returns ids, or an empty list for nil, so JSON shows [].
func nonNil(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}

// handleEvent answers GET /event/{eventId} with a one-PDU transaction.
func (s *Server) handleEvent(h RoomHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		ev, err := h.Event(r.Context(), in.Origin, pathVar(r, "eventId"))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"origin": s.ServerName, "origin_server_ts": s.now().UnixMilli(), "pdus": rawEvents([][]byte{ev}),
		})
		return nil
	}
}

func eventIDParam(r *http.Request) (string, error) {
	id := r.URL.Query().Get("event_id")
	if id == "" {
		return "", Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "event_id is required")
	}
	return id, nil
}

// handleState answers GET /state/{roomId}?event_id=: the state before the
// event and its auth chain.
func handleState(h RoomHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		eventID, err := eventIDParam(r)
		if err != nil {
			return err
		}
		state, chain, err := h.State(r.Context(), in.Origin, pathVar(r, "roomId"), eventID)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"pdus": rawEvents(state), "auth_chain": rawEvents(chain)})
		return nil
	}
}

// handleStateIDs answers GET /state_ids/{roomId}?event_id=.
func handleStateIDs(h RoomHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		eventID, err := eventIDParam(r)
		if err != nil {
			return err
		}
		state, chain, err := h.StateIDs(r.Context(), in.Origin, pathVar(r, "roomId"), eventID)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"pdu_ids": nonNil(state), "auth_chain_ids": nonNil(chain)})
		return nil
	}
}

// handleEventAuth answers GET /event_auth/{roomId}/{eventId}.
func handleEventAuth(h RoomHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		chain, err := h.EventAuth(r.Context(), in.Origin, pathVar(r, "roomId"), pathVar(r, "eventId"))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"auth_chain": rawEvents(chain)})
		return nil
	}
}

// handleBackfill answers GET /backfill/{roomId}?v=...&limit=N.
func (s *Server) handleBackfill(h RoomHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		q := r.URL.Query()
		from := q["v"]
		if len(from) == 0 {
			return Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "v is required")
		}
		limit, err := strconv.Atoi(q.Get("limit"))
		if err != nil || limit < 1 {
			return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "limit must be a positive integer")
		}
		evs, err := h.Backfill(r.Context(), in.Origin, pathVar(r, "roomId"), from, limit)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"origin": s.ServerName, "origin_server_ts": s.now().UnixMilli(), "pdus": rawEvents(evs),
		})
		return nil
	}
}

// missingEventsBody is the body of POST /get_missing_events.
type missingEventsBody struct {
	Earliest []string `json:"earliest_events"`
	Latest   []string `json:"latest_events"`
	Limit    *int     `json:"limit"`
	MinDepth int64    `json:"min_depth"`
}

// handleMissingEvents answers POST /get_missing_events/{roomId}.
func handleMissingEvents(h RoomHandler) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		var body missingEventsBody
		if err := json.Unmarshal(in.Body, &body); err != nil {
			return Errorf(http.StatusBadRequest, "M_BAD_JSON", "get_missing_events body: %v", err)
		}
		if body.Earliest == nil || body.Latest == nil {
			return Errorf(http.StatusBadRequest, "M_BAD_JSON", "earliest_events and latest_events are required")
		}
		limit := 10
		if body.Limit != nil {
			limit = *body.Limit
		}
		evs, err := h.MissingEvents(r.Context(), in.Origin, pathVar(r, "roomId"), body.Earliest, body.Latest, limit, body.MinDepth)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"events": rawEvents(evs)})
		return nil
	}
}

// roomPath joins path segments, escaping each ID.
func roomPath(prefix string, ids ...string) string {
	p := prefix
	for _, id := range ids {
		p += "/" + url.PathEscape(id)
	}
	return p
}

// eventList decodes the array of events under key of a response.
func eventList(raw []byte, key string) ([][]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	var list []json.RawMessage
	if err := json.Unmarshal(obj[key], &list); err != nil || obj[key] == nil {
		return nil, fmt.Errorf("response has no %s array", key)
	}
	out := make([][]byte, len(list))
	for i, ev := range list {
		out[i] = ev
	}
	return out, nil
}

// Event fetches one event from server (GET /event/{eventId}) and returns
// its JSON.
func (c *Client) Event(ctx context.Context, server, eventID string) ([]byte, error) {
	raw, err := c.Do(ctx, Request{Method: http.MethodGet, Destination: server, Path: roomPath("/_matrix/federation/v1/event", eventID)})
	if err != nil {
		return nil, err
	}
	pdus, err := eventList(raw, "pdus")
	if err != nil {
		return nil, fmt.Errorf("event %s from %s: %w", eventID, server, err)
	}
	if len(pdus) != 1 {
		return nil, fmt.Errorf("event %s from %s: %d PDUs in the answer, want 1", eventID, server, len(pdus))
	}
	return pdus[0], nil
}

// StateIDs asks server for the state before eventID (GET /state_ids).
func (c *Client) StateIDs(ctx context.Context, server, roomID, eventID string) (stateIDs, authChainIDs []string, err error) {
	raw, err := c.Do(ctx, Request{
		Method: http.MethodGet, Destination: server, Path: roomPath("/_matrix/federation/v1/state_ids", roomID),
		Query: url.Values{"event_id": {eventID}},
	})
	if err != nil {
		return nil, nil, err
	}
	var body struct {
		PDUIDs       []string `json:"pdu_ids"`
		AuthChainIDs []string `json:"auth_chain_ids"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, nil, fmt.Errorf("state_ids from %s: %w", server, err)
	}
	if body.PDUIDs == nil || body.AuthChainIDs == nil {
		return nil, nil, fmt.Errorf("state_ids from %s: pdu_ids and auth_chain_ids are required", server)
	}
	return body.PDUIDs, body.AuthChainIDs, nil
}

// State asks server for the state before eventID with its auth chain
// (GET /state).
func (c *Client) State(ctx context.Context, server, roomID, eventID string) (state, authChain [][]byte, err error) {
	raw, err := c.Do(ctx, Request{
		Method: http.MethodGet, Destination: server, Path: roomPath("/_matrix/federation/v1/state", roomID),
		Query: url.Values{"event_id": {eventID}},
	})
	if err != nil {
		return nil, nil, err
	}
	if state, err = eventList(raw, "pdus"); err != nil {
		return nil, nil, fmt.Errorf("state from %s: %w", server, err)
	}
	if authChain, err = eventList(raw, "auth_chain"); err != nil {
		return nil, nil, fmt.Errorf("state from %s: %w", server, err)
	}
	return state, authChain, nil
}

// EventAuth asks server for the auth chain of eventID (GET /event_auth).
func (c *Client) EventAuth(ctx context.Context, server, roomID, eventID string) ([][]byte, error) {
	raw, err := c.Do(ctx, Request{Method: http.MethodGet, Destination: server, Path: roomPath("/_matrix/federation/v1/event_auth", roomID, eventID)})
	if err != nil {
		return nil, err
	}
	out, err := eventList(raw, "auth_chain")
	if err != nil {
		return nil, fmt.Errorf("event_auth from %s: %w", server, err)
	}
	return out, nil
}

// Backfill asks server for up to limit events from the from events
// backwards (GET /backfill).
func (c *Client) Backfill(ctx context.Context, server, roomID string, from []string, limit int) ([][]byte, error) {
	raw, err := c.Do(ctx, Request{
		Method: http.MethodGet, Destination: server, Path: roomPath("/_matrix/federation/v1/backfill", roomID),
		Query: url.Values{"v": from, "limit": {strconv.Itoa(limit)}},
	})
	if err != nil {
		return nil, err
	}
	out, err := eventList(raw, "pdus")
	if err != nil {
		return nil, fmt.Errorf("backfill from %s: %w", server, err)
	}
	return out, nil
}

// GetMissingEvents asks server for the events before latest back to
// earliest (POST /get_missing_events).
func (c *Client) GetMissingEvents(ctx context.Context, server, roomID string, earliest, latest []string, limit int, minDepth int64) ([][]byte, error) {
	raw, err := c.Do(ctx, Request{
		Method: http.MethodPost, Destination: server, Path: roomPath("/_matrix/federation/v1/get_missing_events", roomID),
		Body: map[string]any{"earliest_events": nonNil(earliest), "latest_events": nonNil(latest), "limit": limit, "min_depth": minDepth},
	})
	if err != nil {
		return nil, err
	}
	out, err := eventList(raw, "events")
	if err != nil {
		return nil, fmt.Errorf("get_missing_events from %s: %w", server, err)
	}
	return out, nil
}
