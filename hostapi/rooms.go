package hostapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
)

// Bounds of room requests.
const (
	defaultMessagesLimit = 20
	maxMessagesLimit     = 1000
	// defaultTypingTimeout is how long a user shows as typing when the
	// request does not say; maxTypingTimeout bounds what it may say.
	defaultTypingTimeout = 30 * time.Second
	maxTypingTimeout     = 10 * time.Minute
)

// eventIDResponse is the answer of every route that creates one event.
type eventIDResponse struct {
	EventID string `json:"event_id"`
}

type createRoomRequest struct {
	Creator            *string  `json:"creator"`
	RoomVersion        string   `json:"room_version"`
	Preset             string   `json:"preset"`
	Name               string   `json:"name"`
	Topic              string   `json:"topic"`
	Alias              string   `json:"alias"`
	Invite             []string `json:"invite"`
	AdditionalCreators []string `json:"additional_creators"`
}

type createRoomResponse struct {
	RoomID        string            `json:"room_id"`
	FailedInvites map[string]string `json:"failed_invites,omitempty"`
}

func (s *Server) handleCreateRoom(w http.ResponseWriter, r *http.Request) error {
	var req createRoomRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	creator, err := required("creator", req.Creator)
	if err != nil {
		return err
	}
	if err := firstError(
		s.localUser("creator", creator),
		roomVersion(req.RoomVersion),
		preset(req.Preset),
		anyUsers("invite", req.Invite),
		anyUsers("additional_creators", req.AdditionalCreators),
	); err != nil {
		return err
	}
	if req.Alias != "" {
		if err := s.localAlias("alias", req.Alias); err != nil {
			return err
		}
	}
	roomID, err := s.host.CreateRoom(r.Context(), homeserver.CreateRoomRequest{
		Creator:            creator,
		Version:            req.RoomVersion,
		Preset:             req.Preset,
		Name:               req.Name,
		Topic:              req.Topic,
		Alias:              req.Alias,
		Invite:             req.Invite,
		AdditionalCreators: req.AdditionalCreators,
	})
	var inviteErr *homeserver.InviteError
	if errors.As(err, &inviteErr) {
		// The room exists; only (some) invites failed. The reasons are
		// about the invitees and their servers, so they are shown.
		failed := make(map[string]string, len(inviteErr.Failures))
		for user, cause := range inviteErr.Failures {
			failed[user] = cause.Error()
			requestLog(r).Warn().Err(cause).Str("room_id", inviteErr.RoomID).Str("invitee", user).Msg("initial invite failed")
		}
		writeJSON(w, http.StatusOK, createRoomResponse{RoomID: inviteErr.RoomID, FailedInvites: failed})
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, createRoomResponse{RoomID: roomID})
	return nil
}

// preset checks a create preset ("" = private_chat).
func preset(v string) error {
	switch v {
	case "", homeserver.PresetPrivateChat, homeserver.PresetPublicChat:
		return nil
	}
	return invalidParam("preset: unknown preset %q (private_chat or public_chat)", v)
}

func (s *Server) handleRooms(w http.ResponseWriter, r *http.Request) error {
	list, err := s.host.Rooms(r.Context())
	if err != nil {
		return err
	}
	if list == nil {
		list = []homeserver.RoomSummary{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"rooms": list})
	return nil
}

func (s *Server) handleRoom(w http.ResponseWriter, r *http.Request) error {
	room := pathVar(r, "roomId")
	if err := roomID("roomId", room); err != nil {
		return err
	}
	summary, err := s.host.Room(r.Context(), room)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, summary)
	return nil
}

type joinRequest struct {
	UserID *string  `json:"user_id"`
	Via    []string `json:"via"`
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) error {
	target := pathVar(r, "roomIdOrAlias")
	if err := roomIDOrAlias("roomIdOrAlias", target); err != nil {
		return err
	}
	var req joinRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	user, err := required("user_id", req.UserID)
	if err != nil {
		return err
	}
	if err := firstError(s.localUser("user_id", user), serverNames("via", req.Via)); err != nil {
		return err
	}
	roomID, eventID, err := s.host.JoinRoom(r.Context(), target, user, req.Via)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"room_id": roomID, "event_id": eventID})
	return nil
}

type knockRequest struct {
	UserID *string  `json:"user_id"`
	Reason string   `json:"reason"`
	Via    []string `json:"via"`
}

func (s *Server) handleKnock(w http.ResponseWriter, r *http.Request) error {
	target := pathVar(r, "roomIdOrAlias")
	if err := roomIDOrAlias("roomIdOrAlias", target); err != nil {
		return err
	}
	var req knockRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	user, err := required("user_id", req.UserID)
	if err != nil {
		return err
	}
	if err := firstError(s.localUser("user_id", user), serverNames("via", req.Via)); err != nil {
		return err
	}
	eventID, err := s.host.Knock(r.Context(), target, user, req.Reason, req.Via)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, eventIDResponse{EventID: eventID})
	return nil
}

type inviteRequest struct {
	Sender *string `json:"sender"`
	UserID *string `json:"user_id"`
}

func (s *Server) handleInvite(w http.ResponseWriter, r *http.Request) error {
	room := pathVar(r, "roomId")
	if err := roomID("roomId", room); err != nil {
		return err
	}
	var req inviteRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	sender, err := required("sender", req.Sender)
	if err != nil {
		return err
	}
	invitee, err := required("user_id", req.UserID)
	if err != nil {
		return err
	}
	if err := firstError(s.localUser("sender", sender), anyUser("user_id", invitee)); err != nil {
		return err
	}
	eventID, err := s.host.Invite(r.Context(), room, sender, invitee)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, eventIDResponse{EventID: eventID})
	return nil
}

type leaveRequest struct {
	UserID *string `json:"user_id"`
	Reason string  `json:"reason"`
}

func (s *Server) handleLeave(w http.ResponseWriter, r *http.Request) error {
	room := pathVar(r, "roomId")
	if err := roomID("roomId", room); err != nil {
		return err
	}
	var req leaveRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	user, err := required("user_id", req.UserID)
	if err != nil {
		return err
	}
	if err := s.localUser("user_id", user); err != nil {
		return err
	}
	eventID, err := s.host.Leave(r.Context(), room, user, req.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, eventIDResponse{EventID: eventID})
	return nil
}

type moderationRequest struct {
	Sender *string `json:"sender"`
	UserID *string `json:"user_id"`
	Reason string  `json:"reason"`
}

// handleModeration serves kick, ban and unban, which differ only in the
// host operation.
func (s *Server) handleModeration(op func(ctx context.Context, roomID, sender, userID, reason string) (string, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		room := pathVar(r, "roomId")
		if err := roomID("roomId", room); err != nil {
			return err
		}
		var req moderationRequest
		if err := decodeBody(r, &req); err != nil {
			return err
		}
		sender, err := required("sender", req.Sender)
		if err != nil {
			return err
		}
		target, err := required("user_id", req.UserID)
		if err != nil {
			return err
		}
		if err := firstError(s.localUser("sender", sender), anyUser("user_id", target)); err != nil {
			return err
		}
		eventID, err := op(r.Context(), room, sender, target, req.Reason)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, eventIDResponse{EventID: eventID})
		return nil
	}
}

type sendRequest struct {
	Sender  *string        `json:"sender"`
	Type    *string        `json:"type"`
	Content map[string]any `json:"content"`
	TxnID   string         `json:"txn_id"`
}

func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) error {
	room := pathVar(r, "roomId")
	if err := roomID("roomId", room); err != nil {
		return err
	}
	var req sendRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	sender, err := required("sender", req.Sender)
	if err != nil {
		return err
	}
	typ, err := required("type", req.Type)
	if err != nil {
		return err
	}
	content, err := checkContent("content", req.Content)
	if err != nil {
		return err
	}
	if err := firstError(s.localUser("sender", sender), eventType("type", typ)); err != nil {
		return err
	}
	eventID, err := s.host.Send(r.Context(), room, sender, typ, content, req.TxnID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, eventIDResponse{EventID: eventID})
	return nil
}

type setStateRequest struct {
	Sender  *string        `json:"sender"`
	Content map[string]any `json:"content"`
}

func (s *Server) handleSetState(w http.ResponseWriter, r *http.Request) error {
	room, typ, stateKey := pathVar(r, "roomId"), pathVar(r, "eventType"), pathVar(r, "stateKey")
	if err := firstError(roomID("roomId", room), eventType("eventType", typ)); err != nil {
		return err
	}
	var req setStateRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	sender, err := required("sender", req.Sender)
	if err != nil {
		return err
	}
	content, err := checkContent("content", req.Content)
	if err != nil {
		return err
	}
	if err := s.localUser("sender", sender); err != nil {
		return err
	}
	eventID, err := s.host.SetState(r.Context(), room, sender, typ, stateKey, content)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, eventIDResponse{EventID: eventID})
	return nil
}

type redactRequest struct {
	Sender *string `json:"sender"`
	Reason string  `json:"reason"`
}

func (s *Server) handleRedact(w http.ResponseWriter, r *http.Request) error {
	room, target := pathVar(r, "roomId"), pathVar(r, "eventId")
	if err := firstError(roomID("roomId", room), eventID("eventId", target)); err != nil {
		return err
	}
	var req redactRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	sender, err := required("sender", req.Sender)
	if err != nil {
		return err
	}
	if err := s.localUser("sender", sender); err != nil {
		return err
	}
	id, err := s.host.Redact(r.Context(), room, sender, target, req.Reason)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, eventIDResponse{EventID: id})
	return nil
}

type typingRequest struct {
	UserID    *string `json:"user_id"`
	Typing    *bool   `json:"typing"`
	TimeoutMS *int64  `json:"timeout_ms"`
}

func (s *Server) handleTyping(w http.ResponseWriter, r *http.Request) error {
	room := pathVar(r, "roomId")
	if err := roomID("roomId", room); err != nil {
		return err
	}
	var req typingRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	user, err := required("user_id", req.UserID)
	if err != nil {
		return err
	}
	if req.Typing == nil {
		return badJSON("missing required field %q (a boolean)", "typing")
	}
	if err := s.localUser("user_id", user); err != nil {
		return err
	}
	timeout := defaultTypingTimeout
	if req.TimeoutMS != nil {
		timeout = time.Duration(*req.TimeoutMS) * time.Millisecond
		if *req.TimeoutMS < 0 || timeout > maxTypingTimeout {
			return invalidParam("timeout_ms must be from 0 to %d", maxTypingTimeout.Milliseconds())
		}
	}
	if err := s.host.Typing(r.Context(), room, user, *req.Typing, timeout); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

type receiptRequest struct {
	UserID      *string `json:"user_id"`
	EventID     *string `json:"event_id"`
	ReceiptType string  `json:"receipt_type"`
}

func (s *Server) handleReceipt(w http.ResponseWriter, r *http.Request) error {
	room := pathVar(r, "roomId")
	if err := roomID("roomId", room); err != nil {
		return err
	}
	var req receiptRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	user, err := required("user_id", req.UserID)
	if err != nil {
		return err
	}
	target, err := required("event_id", req.EventID)
	if err != nil {
		return err
	}
	if err := firstError(s.localUser("user_id", user), eventID("event_id", target)); err != nil {
		return err
	}
	if err := s.host.Receipt(r.Context(), room, user, req.ReceiptType, target); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

func (s *Server) handleState(w http.ResponseWriter, r *http.Request) error {
	room := pathVar(r, "roomId")
	if err := roomID("roomId", room); err != nil {
		return err
	}
	state, err := s.host.State(r.Context(), room)
	if err != nil {
		return err
	}
	if state == nil {
		state = []json.RawMessage{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"state": state})
	return nil
}

type messagesResponse struct {
	Chunk []json.RawMessage `json:"chunk"`
	Start string            `json:"start"`
	End   string            `json:"end,omitempty"`
}

func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request) error {
	room := pathVar(r, "roomId")
	if err := roomID("roomId", room); err != nil {
		return err
	}
	query := r.URL.Query()
	backwards := true
	switch dir := query.Get("dir"); dir {
	case "", "b":
	case "f":
		backwards = false
	default:
		return invalidParam("dir must be b or f, not %q", dir)
	}
	limit, err := intParam(query, "limit", defaultMessagesLimit, 1, maxMessagesLimit)
	if err != nil {
		return err
	}
	from := query.Get("from")
	chunk, end, err := s.host.Messages(r.Context(), room, from, backwards, int(limit))
	if err != nil {
		return err
	}
	if chunk == nil {
		chunk = []json.RawMessage{}
	}
	writeJSON(w, http.StatusOK, messagesResponse{Chunk: chunk, Start: from, End: end})
	return nil
}
