package store

import "github.com/ferry-matrix/ferry/rooms"

// StateKey is a (type, state_key) pair.
type StateKey struct {
	Type     string
	StateKey string
}

// StateMap is a room state: each key mapped to the ID of the state event
// that holds it.
type StateMap map[StateKey]string

// Outcome is what the engine decided about an event it persists.
type Outcome int

const (
	// Accepted events passed every check and are part of the room.
	Accepted Outcome = iota
	// SoftFailed events passed auth against the state before them but not
	// against the current state; they are kept, never become forward
	// extremities and are not sent to the host.
	SoftFailed
	// Rejected events failed auth; they are kept (so they are not fetched
	// again) but take no part in state.
	Rejected
	// Outlier events are held without the state before them: auth chain
	// and state events received with a join, events fetched by ID.
	Outlier
)

func (o Outcome) String() string {
	switch o {
	case Accepted:
		return "accepted"
	case SoftFailed:
		return "soft_failed"
	case Rejected:
		return "rejected"
	case Outlier:
		return "outlier"
	default:
		return "unknown"
	}
}

// StateRef names a room state relative to what is stored: the state after
// (or before) an event, plus changes. With neither event set, Changes is
// the whole state. Express a state as a small change to a stored one
// whenever possible: the snapshot written for it then costs only the
// change.
type StateRef struct {
	// AfterEvent starts from the state after this event: the state before
	// it, plus the event itself if it is an accepted or soft-failed state
	// event. It may be an earlier event of the same batch.
	AfterEvent string
	// BeforeEvent starts from the state before this event (used when
	// AfterEvent is empty).
	BeforeEvent string
	// Changes are applied on top; an empty event ID removes the key.
	Changes StateMap
}

// NewEvent is one event of a Batch and what the engine decided about it.
type NewEvent struct {
	Event          *rooms.Event
	Outcome        Outcome
	RejectedReason string // why, for Rejected
	// StateBefore is the state before the event; required for Accepted
	// and SoftFailed, optional for Rejected, ignored for Outlier.
	StateBefore *StateRef
	// Destinations are the servers the event is queued for.
	Destinations []string
	// Absent says the caller knows the store has no row of the event, not
	// even a placeholder (UnheldEvents said so, and nothing of the room
	// was written since): the store does not look for one. Wrong, the
	// write fails (the event ID is unique) and nothing of it is kept.
	Absent bool
}

// Batch is what PersistEvents writes in one transaction.
type Batch struct {
	// Events in order: an event's StateBefore may name earlier events of
	// the batch. All belong to one room; the room row is made on first use
	// with the events' version.
	Events []NewEvent
	// RoomStatus, when not empty, becomes the room's status.
	RoomStatus string
	// CurrentState, when not nil, becomes the room's current state.
	CurrentState *StateRef
	// HostLog entries are appended to the host event log.
	HostLog []HostLogEntry
}

// PersistResult reports what PersistEvents did.
type PersistResult struct {
	// Stored lists the events newly written (or promoted from outlier);
	// events already held are skipped.
	Stored []string
	// HostLog has the positions given to Batch.HostLog, in order.
	HostLog []int64
	// Extremities are the room's forward extremities after the batch,
	// sorted, when it had accepted events; nil otherwise.
	Extremities []string
}

// StoredEvent is an event read back with what was decided about it.
type StoredEvent struct {
	Event          *rooms.Event
	Outlier        bool
	Rejected       bool
	RejectedReason string
	SoftFailed     bool
	// Redacted is true when Event is the redacted form.
	Redacted bool
}

// Room is one room the server knows.
type Room struct {
	ID        string
	Version   string // wire ID ("10", "12")
	Status    string // our relation to it (RoomCreated, RoomJoined, ...)
	CreatedTS int64
}

// Room statuses.
const (
	RoomCreated = "created"
	RoomJoined  = "joined"
	RoomInvited = "invited"
	RoomLeft    = "left"
)
