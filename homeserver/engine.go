package homeserver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// Log field names.
const (
	fieldOrigin  = "origin"
	fieldRoomID  = "room_id"
	fieldEventID = "event_id"
)

// Bounds of the work one inbound PDU may cause.
const (
	// DefaultMissingEventsLimit is how many events one /get_missing_events
	// request asks for when a PDU's prev events are unknown.
	DefaultMissingEventsLimit = 20
	// DefaultMaxFetchedEvents bounds the events fetched one by one with
	// /event while filling a gap through /state_ids.
	DefaultMaxFetchedEvents = 200
	// DefaultFetchTimeout bounds all the requests made for one PDU.
	DefaultFetchTimeout = 30 * time.Second
	// eventCacheSize bounds the parsed events the engine keeps in memory.
	eventCacheSize = 20000
)

// KeySource gives the verifier of event signatures. *keys.Ring satisfies
// it.
type KeySource interface {
	KeyLookup(ctx context.Context) rooms.KeyLookup
}

// Remote is what the engine asks of other servers while receiving events.
// *federation.Client satisfies it. Events are returned as raw JSON; the
// engine parses and checks each one.
type Remote interface {
	// GetMissingEvents asks server for the events before latest back to
	// earliest (POST /get_missing_events).
	GetMissingEvents(ctx context.Context, server, roomID string, earliest, latest []string, limit int, minDepth int64) ([][]byte, error)
	// StateIDs asks server for the IDs of the state before eventID and of
	// its auth chain (GET /state_ids).
	StateIDs(ctx context.Context, server, roomID, eventID string) (stateIDs, authChainIDs []string, err error)
	// Event asks server for one event (GET /event).
	Event(ctx context.Context, server, eventID string) ([]byte, error)
}

// Engine is the room engine: it receives events from federation, creates
// rooms and sends local events, and answers reads of room history. Fill
// the exported fields before first use; they must not change afterwards.
// Work on one room is serialized by a per-room lock, different rooms run
// in parallel. An Engine is safe for concurrent use.
type Engine struct {
	// ServerName is our server name. Required.
	ServerName string
	// Signer signs the events we build. Required for CreateRoom and
	// SendEvent.
	Signer rooms.SigningKey
	// Store holds everything. Required.
	Store *store.DB
	// Keys verifies signatures of received events. Required for inbound
	// PDUs.
	Keys KeySource
	// Remote fetches missing events; nil disables fetching (PDUs with
	// unknown prev events are then rejected).
	Remote Remote
	// Logger receives one line per rejected or dropped PDU (warn) and
	// debug lines per event. The zero value logs nothing.
	Logger zerolog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// MissingEventsLimit, MaxFetchedEvents and FetchTimeout bound gap
	// filling; the Default constants when zero.
	MissingEventsLimit int
	MaxFetchedEvents   int
	FetchTimeout       time.Duration
	// OnQueued, when set, is called with the destinations items were
	// queued for, after they are committed (Delivery.Notify).
	OnQueued func(destinations []string)
	// DestinationAllowed, when set, filters the servers events and EDUs
	// are queued for (the federation allow / deny list).
	DestinationAllowed func(server string) bool
	// ObservePersisted and ObserveStateResolution, when set, are told of
	// every event persisted (its outcome, and whether one of our users
	// sent it) and of the time each state resolution took, for metrics.
	// They must be fast and safe for concurrent use.
	ObservePersisted       func(outcome store.Outcome, local bool)
	ObserveStateResolution func(time.Duration)
	// AutoRegisterUsers makes invites from other servers for local users
	// that are not registered create them; when false such invites are
	// refused (403).
	AutoRegisterUsers bool
	// PartialStateJoins makes joins through other servers ask for partial
	// state (send_join with omit_members=true): the room is usable once
	// the partial state is verified, and its full state is fetched and
	// verified in the background (partial_join.go, partial_resync.go).
	PartialStateJoins bool
	// PartialResyncBackoff is the first wait after a failed attempt to
	// fetch a partial room's full state, doubled after each round of the
	// room's servers up to a few minutes; one second when zero.
	PartialResyncBackoff time.Duration

	// partial remembers the rooms whose state is partial.
	partial partialRooms

	locksMu sync.Mutex
	locks   map[string]*roomLock
	// writes counts each room's ended event writes (heldlookup.go).
	writes roomWrites

	cacheMu sync.Mutex
	cache   map[string]*store.StoredEvent
	chains  map[string]*rooms.AuthChainCache
	heads   map[string]*roomHead
	// pinned holds staged events until they are committed; the cache may
	// be emptied, pinned events stay.
	pinned map[string]*store.StoredEvent
	// awaiting holds accepted redactions by the target they wait for.
	awaiting map[string][]stagedRedaction
}

type roomLock struct {
	mu   sync.Mutex
	refs int
}

func (e *Engine) now() time.Time {
	if e.Now == nil {
		return time.Now()
	}
	return e.Now()
}

// lockRoom serializes work on one room; the returned func unlocks.
func (e *Engine) lockRoom(roomID string) func() {
	e.locksMu.Lock()
	if e.locks == nil {
		e.locks = make(map[string]*roomLock)
	}
	l := e.locks[roomID]
	if l == nil {
		l = &roomLock{}
		e.locks[roomID] = l
	}
	l.refs++
	e.locksMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		e.locksMu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(e.locks, roomID)
		}
		e.locksMu.Unlock()
	}
}

// ErrorKind classifies the errors the engine returns to request handlers.
type ErrorKind int

const (
	// KindNotFound: the room, event or user is not known here.
	KindNotFound ErrorKind = iota + 1
	// KindForbidden: the requester may not see or do this.
	KindForbidden
	// KindBadRequest: the request is malformed.
	KindBadRequest
	// KindConflict: the request clashes with what exists (an alias that
	// is taken).
	KindConflict
	// KindUnavailable: the request needed other servers and none of them
	// answered usefully.
	KindUnavailable
)

// Error is a refusal of a request, safe to show to the requester. It has
// NotFound, Forbidden, BadRequest, Conflict and Unavailable methods so
// that callers in other packages can classify it without importing this
// one, and MatrixCode for a precise errcode where the kind's default
// (M_NOT_FOUND, M_FORBIDDEN, M_INVALID_PARAM, ...) is too coarse.
type Error struct {
	Kind    ErrorKind
	Message string
	// Code, when set, is the Matrix errcode to answer with, such as
	// M_UNSUPPORTED_ROOM_VERSION.
	Code string
}

func (e *Error) Error() string { return e.Message }

// NotFound reports whether the thing asked for is unknown.
func (e *Error) NotFound() bool { return e.Kind == KindNotFound }

// Forbidden reports whether the requester is refused.
func (e *Error) Forbidden() bool { return e.Kind == KindForbidden }

// BadRequest reports whether the request is malformed.
func (e *Error) BadRequest() bool { return e.Kind == KindBadRequest }

// Conflict reports whether the request clashes with existing data.
func (e *Error) Conflict() bool { return e.Kind == KindConflict }

// Unavailable reports whether other servers needed for the request
// failed.
func (e *Error) Unavailable() bool { return e.Kind == KindUnavailable }

// MatrixCode is the errcode the requester should see, or "" for the
// kind's default.
func (e *Error) MatrixCode() string { return e.Code }

func notFound(format string, args ...any) error {
	return &Error{Kind: KindNotFound, Message: fmt.Sprintf(format, args...)}
}

func forbidden(format string, args ...any) error {
	return &Error{Kind: KindForbidden, Message: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return &Error{Kind: KindBadRequest, Message: fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) error {
	return &Error{Kind: KindConflict, Message: fmt.Sprintf(format, args...)}
}

func unavailable(format string, args ...any) error {
	return &Error{Kind: KindUnavailable, Message: fmt.Sprintf(format, args...)}
}

// withCode returns a refusal of kind with a precise errcode.
func withCode(kind ErrorKind, code, format string, args ...any) error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// storedEvent reads a held event through the engine's cache.
func (e *Engine) storedEvent(ctx context.Context, id string) (*store.StoredEvent, error) {
	e.cacheMu.Lock()
	se, ok := e.pinned[id]
	if !ok {
		se, ok = e.cache[id]
	}
	e.cacheMu.Unlock()
	if ok {
		return se, nil
	}
	se, err := e.Store.Event(ctx, id)
	if err != nil {
		return nil, err
	}
	e.remember(se)
	return se, nil
}

func (e *Engine) remember(se *store.StoredEvent) {
	e.cacheMu.Lock()
	defer e.cacheMu.Unlock()
	if e.cache == nil || len(e.cache) >= eventCacheSize {
		e.cache = make(map[string]*store.StoredEvent)
	}
	e.cache[se.Event.EventID()] = se
}

// forget drops events whose stored form changed (persisted, redacted).
func (e *Engine) forget(ids ...string) {
	e.cacheMu.Lock()
	defer e.cacheMu.Unlock()
	for _, id := range ids {
		delete(e.cache, id)
	}
}

// chainCache returns the auth chain cache of a room.
func (e *Engine) chainCache(roomID string) *rooms.AuthChainCache {
	e.cacheMu.Lock()
	defer e.cacheMu.Unlock()
	if e.chains == nil {
		e.chains = make(map[string]*rooms.AuthChainCache)
	}
	c := e.chains[roomID]
	if c == nil {
		c = rooms.NewAuthChainCache()
		e.chains[roomID] = c
	}
	return c
}

// eventSource serves state resolution from the store through the
// engine's cache. It implements rooms.EventSource and
// rooms.RejectedSource.
type eventSource struct {
	ctx context.Context
	e   *Engine
	// extra holds events not persisted yet (the one being judged).
	extra map[string]*rooms.Event
}

func (s *eventSource) Event(id string) (*rooms.Event, error) {
	if ev, ok := s.extra[id]; ok {
		return ev, nil
	}
	se, err := s.e.storedEvent(s.ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("event %s: %w", id, rooms.ErrEventNotFound)
	}
	if err != nil {
		return nil, err
	}
	return se.Event, nil
}

func (s *eventSource) Rejected(id string) bool {
	if _, ok := s.extra[id]; ok {
		return false
	}
	se, err := s.e.storedEvent(s.ctx, id)
	return err == nil && se.Rejected
}

var (
	_ rooms.EventSource    = (*eventSource)(nil)
	_ rooms.RejectedSource = (*eventSource)(nil)
)

// toRooms converts a store state map to the rooms type.
func toRooms(m store.StateMap) rooms.StateMap {
	out := make(rooms.StateMap, len(m))
	for k, id := range m {
		out[rooms.StateTuple(k)] = id
	}
	return out
}

// toStore converts a rooms state map to the store type.
func toStore(m rooms.StateMap) store.StateMap {
	out := make(store.StateMap, len(m))
	for k, id := range m {
		out[store.StateKey(k)] = id
	}
	return out
}

// loadState reads the events of the given keys of a state map, for the
// authorization rules. Keys the state lacks are left out.
func (e *Engine) loadState(ctx context.Context, state rooms.StateMap, want []rooms.StateTuple) (map[rooms.StateTuple]*rooms.Event, error) {
	out := make(map[rooms.StateTuple]*rooms.Event, len(want))
	for _, k := range want {
		id, ok := state[k]
		if !ok {
			continue
		}
		se, err := e.storedEvent(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("state event %s: %w", id, err)
		}
		out[k] = se.Event
	}
	return out, nil
}

// authKeys is what the authorization rules read of the state for ev.
func authKeys(ev *rooms.Event) []rooms.StateTuple {
	sel := rooms.AuthSelection(ev)
	for _, k := range sel {
		if k == rooms.CreateTuple {
			return sel
		}
	}
	return append(sel, rooms.CreateTuple)
}

// roomVersion returns the version of a room we hold, and whether we are in
// it (created or joined).
func (e *Engine) roomVersion(ctx context.Context, roomID string) (rooms.Version, bool, error) {
	r, err := e.Store.Room(ctx, roomID)
	if errors.Is(err, store.ErrNotFound) {
		return rooms.Version{}, false, nil
	}
	if err != nil {
		return rooms.Version{}, false, err
	}
	v, err := rooms.LookupVersion(r.Version)
	if err != nil {
		return rooms.Version{}, false, fmt.Errorf("room %s: %w", roomID, err)
	}
	in := r.Status == store.RoomCreated || r.Status == store.RoomJoined
	return v, in, nil
}
