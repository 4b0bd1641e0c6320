package rooms

import (
	"fmt"
)

// EventTemplate is what a local event is built from.
type EventTemplate struct {
	Type     string
	StateKey *string // nil for a non-state event
	Sender   string
	// RoomID is the room; leave it empty for a create event of a version
	// whose room ID is derived from the create event.
	RoomID         string
	Content        map[string]any
	PrevEvents     []string
	AuthEvents     []string
	Depth          int64
	OriginServerTS int64 // milliseconds; the caller owns the clock
	// Redacts is the target of an m.room.redaction; the builder puts it
	// where the room version expects it.
	Redacts string
}

// StringPtr returns a pointer to s, for EventTemplate.StateKey.
func StringPtr(s string) *string { return &s }

// BuildEvent builds, hashes and signs an event of room version v from t,
// as the spec's "Adding hashes and signatures to outgoing events" says:
// content hash over the full event, signature over the redacted event.
// The content is normalised through canonical JSON, so any value
// EncodeCanonical accepts may be used. The caller picks prev_events (the
// forward extremities, at most 20), auth_events (AuthSelectionFor, at most
// 10) and the depth (NextDepth). The result passes ParseEvent's checks or
// BuildEvent fails with the *FormatError that says why. No legacy origin
// key is written.
func BuildEvent(v Version, t EventTemplate, key SigningKey) (*Event, error) {
	content := t.Content
	if content == nil {
		content = map[string]any{}
	}
	if t.Redacts != "" && v.RedactsInContent {
		withRedacts := make(map[string]any, len(content)+1)
		for k, val := range content {
			withRedacts[k] = val
		}
		withRedacts["redacts"] = t.Redacts
		content = withRedacts
	}
	normalised, err := normaliseJSON(content)
	if err != nil {
		return nil, fmt.Errorf("build event: content: %w", err)
	}
	prev := t.PrevEvents
	if prev == nil {
		prev = []string{}
	}
	auth := t.AuthEvents
	if auth == nil {
		auth = []string{}
	}
	obj := map[string]any{
		"type":             t.Type,
		"sender":           t.Sender,
		"content":          normalised,
		"prev_events":      toAnyList(prev),
		"auth_events":      toAnyList(auth),
		"depth":            t.Depth,
		"origin_server_ts": t.OriginServerTS,
	}
	if t.StateKey != nil {
		obj["state_key"] = *t.StateKey
	}
	if t.RoomID != "" {
		obj["room_id"] = t.RoomID
	}
	if t.Redacts != "" && !v.RedactsInContent {
		obj["redacts"] = t.Redacts
	}
	if err := SignEvent(v, obj, key); err != nil {
		return nil, fmt.Errorf("build event: %w", err)
	}
	return NewEventFromObject(v, obj)
}

func toAnyList(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// normaliseJSON re-parses v's canonical encoding so the result holds only
// the value types ParseJSON produces.
func normaliseJSON(v any) (any, error) {
	b, err := EncodeCanonical(v)
	if err != nil {
		return nil, err
	}
	return ParseJSON(b)
}

// NextDepth returns the depth of an event following events of the given
// depths: one more than the largest, or 1 with none, and never more than
// MaxSafeInteger ("if the room's depth is already at the limit, the depth
// must be set to the limit").
func NextDepth(prevDepths ...int64) int64 {
	var max int64
	for _, d := range prevDepths {
		if d > max {
			max = d
		}
	}
	if max >= MaxSafeInteger {
		return MaxSafeInteger
	}
	return max + 1
}
