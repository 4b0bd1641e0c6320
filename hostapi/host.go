package hostapi

import (
	"context"
	"encoding/json"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
)

// Host is what the host API asks of the homeserver: the operations the
// host product performs as its local users, and the host event log.
// *homeserver.Host satisfies it. Methods return *homeserver.Error (or any
// error with the same classifying methods) for refusals the requester
// caused; any other error is ours and is answered 500 without its text.
type Host interface {
	PutUser(ctx context.Context, u homeserver.User) (homeserver.User, error)
	User(ctx context.Context, userID string) (homeserver.User, error)
	Users(ctx context.Context) ([]homeserver.User, error)
	DeleteUser(ctx context.Context, userID string) error

	CreateRoom(ctx context.Context, req homeserver.CreateRoomRequest) (string, error)
	JoinRoom(ctx context.Context, roomIDOrAlias, userID string, via []string) (roomID, eventID string, err error)
	Invite(ctx context.Context, roomID, sender, userID string) (eventID string, err error)
	Leave(ctx context.Context, roomID, userID, reason string) (string, error)
	Kick(ctx context.Context, roomID, sender, userID, reason string) (string, error)
	Ban(ctx context.Context, roomID, sender, userID, reason string) (string, error)
	Unban(ctx context.Context, roomID, sender, userID, reason string) (string, error)
	Knock(ctx context.Context, roomIDOrAlias, userID, reason string, via []string) (string, error)

	Send(ctx context.Context, roomID, sender, eventType string, content map[string]any, txnID string) (string, error)
	SetState(ctx context.Context, roomID, sender, eventType, stateKey string, content map[string]any) (string, error)
	Redact(ctx context.Context, roomID, sender, eventID, reason string) (string, error)
	Typing(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error
	Receipt(ctx context.Context, roomID, userID, receiptType, eventID string) error

	Rooms(ctx context.Context) ([]homeserver.RoomSummary, error)
	Room(ctx context.Context, roomID string) (homeserver.RoomSummary, error)
	State(ctx context.Context, roomID string) ([]json.RawMessage, error)
	Messages(ctx context.Context, roomID, from string, backwards bool, limit int) (chunk []json.RawMessage, end string, err error)

	PutAlias(ctx context.Context, alias, roomID string) error
	Alias(ctx context.Context, alias string) (roomID string, servers []string, err error)
	DeleteAlias(ctx context.Context, alias string) error

	Destinations(ctx context.Context) ([]homeserver.DestinationHealth, error)

	EventLog
}

// EventLog is the host event log: items in position order, and a way to
// wait for new ones. The stream endpoint and the webhook deliverer read
// it.
type EventLog interface {
	// Events returns up to limit items with a position after since, in
	// order.
	Events(ctx context.Context, since int64, limit int) ([]homeserver.StreamItem, error)
	// WaitEvents returns nil once an item after since exists, or ctx's
	// error when it ends first.
	WaitEvents(ctx context.Context, since int64) error
}

// Cursors persists named positions in the host event log. *store.DB
// satisfies it; the webhook deliverer keeps its position under
// WebhookCursor.
type Cursors interface {
	Cursor(ctx context.Context, name string) (int64, error)
	SetCursor(ctx context.Context, name string, pos int64) error
}
