package client

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"time"
)

// Room presets of CreateRoomRequest.Preset.
const (
	PresetPrivateChat = "private_chat" // join rule invite (the default)
	PresetPublicChat  = "public_chat"  // join rule public
)

// CreateRoomRequest is the body of POST /rooms.
type CreateRoomRequest struct {
	Creator            string   `json:"creator"`
	RoomVersion        string   `json:"room_version,omitempty"` // "" = the server's default
	Preset             string   `json:"preset,omitempty"`
	Name               string   `json:"name,omitempty"`
	Topic              string   `json:"topic,omitempty"`
	Alias              string   `json:"alias,omitempty"` // "#name:our.server"
	Invite             []string `json:"invite,omitempty"`
	AdditionalCreators []string `json:"additional_creators,omitempty"`
}

// CreateRoomResponse is the answer to POST /rooms. FailedInvites, by
// invitee, holds the reasons of the initial invites that failed; the room
// exists all the same.
type CreateRoomResponse struct {
	RoomID        string            `json:"room_id"`
	FailedInvites map[string]string `json:"failed_invites,omitempty"`
}

// JoinRequest is the body of POST /rooms/{roomIdOrAlias}/join.
type JoinRequest struct {
	UserID string   `json:"user_id"`
	Via    []string `json:"via,omitempty"` // servers to join through
}

// JoinResponse is the answer to a join: the room joined and the
// membership event.
type JoinResponse struct {
	RoomID  string `json:"room_id"`
	EventID string `json:"event_id"`
}

// InviteRequest is the body of POST /rooms/{roomId}/invite.
type InviteRequest struct {
	Sender string `json:"sender"`
	UserID string `json:"user_id"`
}

// LeaveRequest is the body of POST /rooms/{roomId}/leave.
type LeaveRequest struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason,omitempty"`
}

// ModerationRequest is the body of kick, ban and unban.
type ModerationRequest struct {
	Sender string `json:"sender"`
	UserID string `json:"user_id"`
	Reason string `json:"reason,omitempty"`
}

// KnockRequest is the body of POST /rooms/{roomIdOrAlias}/knock.
type KnockRequest struct {
	UserID string   `json:"user_id"`
	Reason string   `json:"reason,omitempty"`
	Via    []string `json:"via,omitempty"`
}

// SendRequest is the body of POST /rooms/{roomId}/send. The same (Sender,
// TxnID) always gives the same event, so a retried request never sends
// twice; an empty TxnID turns that off.
type SendRequest struct {
	Sender  string         `json:"sender"`
	Type    string         `json:"type"`
	Content map[string]any `json:"content"`
	TxnID   string         `json:"txn_id,omitempty"`
}

// StateRequest is the body of PUT /rooms/{roomId}/state/{eventType}/{stateKey}.
type StateRequest struct {
	Sender  string         `json:"sender"`
	Content map[string]any `json:"content"`
}

// RedactRequest is the body of POST /rooms/{roomId}/redact/{eventId}.
type RedactRequest struct {
	Sender string `json:"sender"`
	Reason string `json:"reason,omitempty"`
}

// TypingRequest is the body of POST /rooms/{roomId}/typing.
type TypingRequest struct {
	UserID    string `json:"user_id"`
	Typing    bool   `json:"typing"`
	TimeoutMS int    `json:"timeout_ms,omitempty"`
}

// ReceiptRequest is the body of POST /rooms/{roomId}/receipt.
type ReceiptRequest struct {
	UserID      string `json:"user_id"`
	EventID     string `json:"event_id"`
	ReceiptType string `json:"receipt_type,omitempty"` // "" = m.read
}

// RoomSummary describes a room with joined local users.
type RoomSummary struct {
	RoomID           string   `json:"room_id"`
	RoomVersion      string   `json:"room_version"`
	Name             string   `json:"name,omitempty"`
	Topic            string   `json:"topic,omitempty"`
	CanonicalAlias   string   `json:"canonical_alias,omitempty"`
	JoinedLocalUsers []string `json:"joined_local_users"`
	JoinedMembers    int      `json:"joined_members"`
	Servers          []string `json:"servers"`
}

// MessagesRequest selects a page of a room's timeline.
type MessagesRequest struct {
	// Forward pages from oldest to newest; the default is newest first.
	Forward bool
	// From is the token to continue from: "" starts at the newest event
	// (backwards) or the oldest (forwards).
	From string
	// Limit is the page size; 0 means the server's default (20).
	Limit int
}

// Messages is a page of a room's timeline. End, when not empty, is the
// From of the next page; "" means there is no more.
type Messages struct {
	Chunk []json.RawMessage `json:"chunk"`
	Start string            `json:"start"`
	End   string            `json:"end,omitempty"`
}

// AliasTarget is what an alias points to.
type AliasTarget struct {
	RoomID  string   `json:"room_id"`
	Servers []string `json:"servers"`
}

// Destination is the delivery health of one remote server. Timestamps
// are milliseconds since the epoch, 0 when never.
type Destination struct {
	ServerName     string `json:"server_name"`
	LastSuccessTS  int64  `json:"last_success_ts,omitempty"`
	LastFailureTS  int64  `json:"last_failure_ts,omitempty"`
	LastError      string `json:"last_error,omitempty"`
	Failures       int    `json:"failures"`
	BackoffUntilTS int64  `json:"backoff_until_ts,omitempty"`
	Queued         int    `json:"queued"`
	InFlightTxn    string `json:"in_flight_txn,omitempty"`
	Active         bool   `json:"active"`
	TxnsSent       int64  `json:"txns_sent"`
	PDUErrors      int64  `json:"pdu_errors"`
	CatchUps       int64  `json:"catch_ups"`
	Dropped        int64  `json:"dropped"`
}

// eventIDResponse is the answer of every route that creates one event.
type eventIDResponse struct {
	EventID string `json:"event_id"`
}

// CreateRoom creates a room; see [CreateRoomResponse] for partly failed
// invites.
func (c *Client) CreateRoom(ctx context.Context, req CreateRoomRequest) (CreateRoomResponse, error) {
	var out CreateRoomResponse
	err := c.do(ctx, "POST", route("rooms"), nil, req, &out)
	return out, err
}

// JoinRoom joins a local user to a room given by ID or alias, over
// federation through req.Via when the room is not known here.
func (c *Client) JoinRoom(ctx context.Context, roomIDOrAlias string, req JoinRequest) (JoinResponse, error) {
	var out JoinResponse
	err := c.do(ctx, "POST", route("rooms", roomIDOrAlias, "join"), nil, req, &out)
	return out, err
}

// postForEvent posts body to a room route and returns the event ID created.
func (c *Client) postForEvent(ctx context.Context, path string, body any) (string, error) {
	var out eventIDResponse
	err := c.do(ctx, "POST", path, nil, body, &out)
	return out.EventID, err
}

// Invite invites req.UserID as req.Sender.
func (c *Client) Invite(ctx context.Context, roomID string, req InviteRequest) (string, error) {
	return c.postForEvent(ctx, route("rooms", roomID, "invite"), req)
}

// Leave makes req.UserID leave the room (or reject its invite).
func (c *Client) Leave(ctx context.Context, roomID string, req LeaveRequest) (string, error) {
	return c.postForEvent(ctx, route("rooms", roomID, "leave"), req)
}

// Kick removes req.UserID from the room as req.Sender.
func (c *Client) Kick(ctx context.Context, roomID string, req ModerationRequest) (string, error) {
	return c.postForEvent(ctx, route("rooms", roomID, "kick"), req)
}

// Ban bans req.UserID from the room as req.Sender.
func (c *Client) Ban(ctx context.Context, roomID string, req ModerationRequest) (string, error) {
	return c.postForEvent(ctx, route("rooms", roomID, "ban"), req)
}

// Unban lifts the ban of req.UserID as req.Sender.
func (c *Client) Unban(ctx context.Context, roomID string, req ModerationRequest) (string, error) {
	return c.postForEvent(ctx, route("rooms", roomID, "unban"), req)
}

// Knock asks to join a room given by ID or alias.
func (c *Client) Knock(ctx context.Context, roomIDOrAlias string, req KnockRequest) (string, error) {
	return c.postForEvent(ctx, route("rooms", roomIDOrAlias, "knock"), req)
}

// Send sends a message-like event and returns its ID.
func (c *Client) Send(ctx context.Context, roomID string, req SendRequest) (string, error) {
	return c.postForEvent(ctx, route("rooms", roomID, "send"), req)
}

// SetState sends a state event; stateKey may be empty.
func (c *Client) SetState(ctx context.Context, roomID, eventType, stateKey string, req StateRequest) (string, error) {
	path := route("rooms", roomID, "state", eventType)
	if stateKey != "" {
		path = route("rooms", roomID, "state", eventType, stateKey)
	}
	var out eventIDResponse
	err := c.do(ctx, "PUT", path, nil, req, &out)
	return out.EventID, err
}

// Redact redacts eventID as req.Sender and returns the redaction's ID.
func (c *Client) Redact(ctx context.Context, roomID, eventID string, req RedactRequest) (string, error) {
	return c.postForEvent(ctx, route("rooms", roomID, "redact", eventID), req)
}

// Typing tells the room's servers that a user is (or stops) typing.
func (c *Client) Typing(ctx context.Context, roomID string, req TypingRequest) error {
	return c.do(ctx, "POST", route("rooms", roomID, "typing"), nil, req, nil)
}

// Receipt sends a read receipt for an event.
func (c *Client) Receipt(ctx context.Context, roomID string, req ReceiptRequest) error {
	return c.do(ctx, "POST", route("rooms", roomID, "receipt"), nil, req, nil)
}

// Rooms lists the rooms with at least one joined local user.
func (c *Client) Rooms(ctx context.Context) ([]RoomSummary, error) {
	var out struct {
		Rooms []RoomSummary `json:"rooms"`
	}
	err := c.do(ctx, "GET", route("rooms"), nil, nil, &out)
	return out.Rooms, err
}

// Room describes one room.
func (c *Client) Room(ctx context.Context, roomID string) (RoomSummary, error) {
	var out RoomSummary
	err := c.do(ctx, "GET", route("rooms", roomID), nil, nil, &out)
	return out, err
}

// State returns the room's current state events, each with its event_id.
func (c *Client) State(ctx context.Context, roomID string) ([]json.RawMessage, error) {
	var out struct {
		State []json.RawMessage `json:"state"`
	}
	err := c.do(ctx, "GET", route("rooms", roomID, "state"), nil, nil, &out)
	return out.State, err
}

// Messages returns a page of the room's timeline.
func (c *Client) Messages(ctx context.Context, roomID string, req MessagesRequest) (Messages, error) {
	query := url.Values{"dir": {"b"}}
	if req.Forward {
		query.Set("dir", "f")
	}
	if req.From != "" {
		query.Set("from", req.From)
	}
	if req.Limit > 0 {
		query.Set("limit", strconv.Itoa(req.Limit))
	}
	var out Messages
	err := c.do(ctx, "GET", route("rooms", roomID, "messages"), query, nil, &out)
	return out, err
}

// PutAlias points an alias of this server at a room (M_ROOM_IN_USE when
// it is taken).
func (c *Client) PutAlias(ctx context.Context, alias, roomID string) error {
	return c.do(ctx, "PUT", route("aliases", alias), nil, map[string]string{"room_id": roomID}, nil)
}

// Alias resolves an alias.
func (c *Client) Alias(ctx context.Context, alias string) (AliasTarget, error) {
	var out AliasTarget
	err := c.do(ctx, "GET", route("aliases", alias), nil, nil, &out)
	return out, err
}

// DeleteAlias removes an alias of this server.
func (c *Client) DeleteAlias(ctx context.Context, alias string) error {
	return c.do(ctx, "DELETE", route("aliases", alias), nil, nil, nil)
}

// Destinations reports the delivery health of every remote server.
func (c *Client) Destinations(ctx context.Context) ([]Destination, error) {
	var out struct {
		Destinations []Destination `json:"destinations"`
	}
	err := c.do(ctx, "GET", route("destinations"), nil, nil, &out)
	return out.Destinations, err
}

// Time converts one of Destination's millisecond timestamps; zero stays
// the zero time.
func Time(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
