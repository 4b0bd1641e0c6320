package federation

import (
	"context"
)

// RoomHandler is the room engine as the federation endpoints see it:
// transactions in, room history out. The homeserver engine implements it;
// cmd/ferry hands it to the Server. Every method takes the authenticated
// origin; the read methods refuse origins that may not see the room.
//
// Errors may implement NotFound() bool, Forbidden() bool or
// BadRequest() bool; those answering true become 404 M_NOT_FOUND, 403
// M_FORBIDDEN and 400 M_INVALID_PARAM with the error's text. Other errors
// are internal (500, logged, never echoed).
type RoomHandler interface {
	// TransactionResponse returns the answer stored for a transaction
	// (origin, txnID), if it was processed before.
	TransactionResponse(ctx context.Context, origin, txnID string) (response []byte, found bool, err error)
	// StoreTransactionResponse records the answer of a processed
	// transaction.
	StoreTransactionResponse(ctx context.Context, origin, txnID string, response []byte) error
	// ReceivePDUs processes the PDUs of a transaction and returns the
	// verdict per event ID: nil when accepted (or soft-failed), else why
	// not; an error with Internal() true is a fault of the handler, not
	// of the PDU. It returns once everything it accepted is committed.
	ReceivePDUs(ctx context.Context, origin string, pdus [][]byte) map[string]error
	// ReceiveEDU processes one EDU; an error says why it was ignored.
	ReceiveEDU(ctx context.Context, origin, eduType string, content []byte) error

	// Event returns one event's JSON.
	Event(ctx context.Context, origin, eventID string) ([]byte, error)
	// StateIDs returns the IDs of the state before eventID and of the
	// auth chain of that state.
	StateIDs(ctx context.Context, origin, roomID, eventID string) (stateIDs, authChainIDs []string, err error)
	// State is StateIDs with the events' JSON.
	State(ctx context.Context, origin, roomID, eventID string) (state, authChain [][]byte, err error)
	// EventAuth returns the full auth chain of eventID.
	EventAuth(ctx context.Context, origin, roomID, eventID string) ([][]byte, error)
	// Backfill returns up to limit events: from and the events before them.
	Backfill(ctx context.Context, origin, roomID string, from []string, limit int) ([][]byte, error)
	// MissingEvents returns events between earliest and latest (exclusive),
	// oldest first.
	MissingEvents(ctx context.Context, origin, roomID string, earliest, latest []string, limit int, minDepth int64) ([][]byte, error)
	// TimestampToEvent returns the room's event closest to ts
	// (milliseconds), at or after it when forward, else at or before it.
	TimestampToEvent(ctx context.Context, origin, roomID string, ts int64, forward bool) (eventID string, eventTS int64, err error)
}
