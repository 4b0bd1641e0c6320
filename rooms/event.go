package rooms

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Size limits of the spec's "Size limits" section.
const (
	MaxPDUBytes      = 65536 // whole event, canonical JSON, signatures included
	MaxTypeBytes     = 255
	MaxStateKeyBytes = 255
	MaxIDBytes       = 255 // sender, room_id, event_id
	MaxPrevEvents    = 20
	MaxAuthEvents    = 10
	// maxRawEventBytes bounds what is even parsed; input with insignificant
	// whitespace may legitimately be somewhat larger than its canonical form.
	maxRawEventBytes = 4 * MaxPDUBytes
)

// ErrBadFormat is matched by every event format violation.
var ErrBadFormat = errors.New("event format")

// FormatError lists every format rule an event breaks.
type FormatError struct {
	Problems []string // one stable sentence per broken rule
}

func (e *FormatError) Error() string {
	return "event format: " + strings.Join(e.Problems, "; ")
}

// Unwrap lets callers match ErrBadFormat.
func (e *FormatError) Unwrap() error { return ErrBadFormat }

// Event is one PDU of a room of a known version. It is immutable: it keeps
// the canonical bytes it was parsed from (unknown keys included, as they are
// covered by the hashes) and the header fields every algorithm needs.
// Methods are safe for concurrent use. Callers must not modify the maps and
// slices accessors return.
type Event struct {
	version    Version
	raw        []byte
	obj        map[string]any
	id         string
	roomID     string
	typ        string
	stateKey   *string
	sender     string
	depth      int64
	ts         int64
	prevEvents []string
	authEvents []string
	content    map[string]any
}

// ParseEvent parses and checks a PDU of room version v. The event ID is
// computed (the wire format carries none). The error, if any, is a
// *JSONError or a *FormatError listing every rule broken.
func ParseEvent(v Version, raw []byte) (*Event, error) {
	if len(raw) > maxRawEventBytes {
		return nil, &FormatError{Problems: []string{fmt.Sprintf("event is %d bytes, more than the %d-byte limit", len(raw), MaxPDUBytes)}}
	}
	tree, err := ParseJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	obj, ok := tree.(map[string]any)
	if !ok {
		return nil, &FormatError{Problems: []string{"event is not a JSON object"}}
	}
	return NewEventFromObject(v, obj)
}

// NewEventFromObject checks an already parsed event object (as from
// ParseJSON; the event takes ownership of obj) and returns the Event.
func NewEventFromObject(v Version, obj map[string]any) (*Event, error) {
	canonical, err := EncodeCanonical(obj)
	if err != nil {
		return nil, &FormatError{Problems: []string{err.Error()}}
	}
	problems := CheckEventFormat(v, obj, len(canonical))
	if len(problems) > 0 {
		return nil, &FormatError{Problems: problems}
	}
	id, err := computeEventID(v, obj)
	if err != nil {
		return nil, err
	}
	return eventFromParts(v, obj, canonical, id), nil
}

func eventFromParts(v Version, obj map[string]any, canonical []byte, id string) *Event {
	ev := &Event{version: v, raw: canonical, obj: obj, id: id}
	ev.typ, _ = obj["type"].(string)
	if sk, ok := obj["state_key"].(string); ok {
		ev.stateKey = &sk
	}
	ev.sender, _ = obj["sender"].(string)
	ev.depth, _ = obj["depth"].(int64)
	ev.ts, _ = obj["origin_server_ts"].(int64)
	ev.prevEvents = stringList(obj["prev_events"])
	ev.authEvents = stringList(obj["auth_events"])
	ev.content, _ = obj["content"].(map[string]any)
	if rid, ok := obj["room_id"].(string); ok {
		ev.roomID = rid
	} else if v.RoomIDs == RoomIDFromCreate && ev.typ == "m.room.create" {
		ev.roomID = "!" + strings.TrimPrefix(id, "$")
	}
	return ev
}

func stringList(v any) []string {
	arr, _ := v.([]any)
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// CheckEventFormat returns every format rule obj breaks for room version v;
// canonicalSize is the length of its canonical encoding. It checks shape and
// limits only; authorization is separate.
func CheckEventFormat(v Version, obj map[string]any, canonicalSize int) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if canonicalSize > MaxPDUBytes {
		bad("event is %d bytes in canonical JSON, more than %d", canonicalSize, MaxPDUBytes)
	}
	typ, ok := obj["type"].(string)
	switch {
	case !ok:
		bad("type: missing or not a string")
	case typ == "":
		bad("type: empty")
	case len(typ) > MaxTypeBytes:
		bad("type: longer than %d bytes", MaxTypeBytes)
	}
	if raw, present := obj["state_key"]; present {
		sk, ok := raw.(string)
		if !ok {
			bad("state_key: not a string")
		} else if len(sk) > MaxStateKeyBytes {
			bad("state_key: longer than %d bytes", MaxStateKeyBytes)
		}
	}
	if typ == "m.room.create" {
		if _, present := obj["state_key"]; !present {
			bad("state_key: m.room.create must be a state event")
		}
	}
	sender, ok := obj["sender"].(string)
	switch {
	case !ok:
		bad("sender: missing or not a string")
	case len(sender) > MaxIDBytes:
		bad("sender: longer than %d bytes", MaxIDBytes)
	case !looksLikeUserID(sender):
		bad("sender: %q is not a user ID", sender)
	}
	rawRoom, hasRoom := obj["room_id"]
	switch {
	case v.RoomIDs == RoomIDFromCreate && typ == "m.room.create":
		if hasRoom {
			bad("room_id: a version %s create event must not have one", v.ID)
		}
	case !hasRoom:
		bad("room_id: missing")
	default:
		rid, ok := rawRoom.(string)
		if !ok {
			bad("room_id: not a string")
		} else if len(rid) > MaxIDBytes {
			bad("room_id: longer than %d bytes", MaxIDBytes)
		} else if !strings.HasPrefix(rid, "!") {
			bad("room_id: %q does not start with '!'", rid)
		}
	}
	if _, ok := obj["content"].(map[string]any); !ok {
		bad("content: missing or not an object")
	}
	checkIDList := func(key string, max int) {
		arr, ok := obj[key].([]any)
		if !ok {
			bad("%s: missing or not an array", key)
			return
		}
		if len(arr) > max {
			bad("%s: %d entries, more than %d", key, len(arr), max)
		}
		for _, e := range arr {
			s, ok := e.(string)
			if !ok || !strings.HasPrefix(s, "$") || len(s) > MaxIDBytes {
				bad("%s: %v is not an event ID", key, e)
				return
			}
		}
	}
	checkIDList("prev_events", MaxPrevEvents)
	checkIDList("auth_events", MaxAuthEvents)
	if d, ok := obj["depth"].(int64); !ok {
		bad("depth: missing or not an integer")
	} else if d < 0 {
		bad("depth: negative")
	}
	if _, ok := obj["origin_server_ts"].(int64); !ok {
		bad("origin_server_ts: missing or not an integer")
	}
	hashes, ok := obj["hashes"].(map[string]any)
	if !ok {
		bad("hashes: missing or not an object")
	} else if h, ok := hashes["sha256"].(string); !ok {
		bad("hashes.sha256: missing or not a string")
	} else if b, err := DecodeBase64(h); err != nil || len(b) != sha256.Size {
		bad("hashes.sha256: not a base64 SHA-256 digest")
	}
	if _, ok := obj["signatures"].(map[string]any); !ok {
		bad("signatures: missing or not an object")
	}
	if raw, present := obj["unsigned"]; present {
		if _, ok := raw.(map[string]any); !ok {
			bad("unsigned: not an object")
		}
	}
	return problems
}

// looksLikeUserID is the loose shape check applied to every sender: '@',
// a non-empty localpart, ':' and a server part. Full grammar checks are
// done by ParseUserID where a user ID is created.
func looksLikeUserID(s string) bool {
	if !strings.HasPrefix(s, "@") || !utf8.ValidString(s) {
		return false
	}
	i := strings.IndexByte(s, ':')
	return i > 1 && i < len(s)-1
}

// serverOfID returns the server part of a user, room or alias ID: the text
// after the first ':'.
func serverOfID(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		return id[i+1:]
	}
	return ""
}

// Version returns the room version the event was parsed under.
func (e *Event) Version() Version { return e.version }

// EventID returns the event's ID ("$" + URL-safe reference hash).
func (e *Event) EventID() string { return e.id }

// RoomID returns the room ID; for a version 12 create event it is derived
// from the event ID.
func (e *Event) RoomID() string { return e.roomID }

// Type returns the event type.
func (e *Event) Type() string { return e.typ }

// StateKey returns the state key and whether the event is a state event.
func (e *Event) StateKey() (string, bool) {
	if e.stateKey == nil {
		return "", false
	}
	return *e.stateKey, true
}

// IsState reports whether the event has a state key.
func (e *Event) IsState() bool { return e.stateKey != nil }

// StateKeyPtr returns the state key or nil for non-state events.
func (e *Event) StateKeyPtr() *string { return e.stateKey }

// Sender returns the sending user's ID.
func (e *Event) Sender() string { return e.sender }

// SenderServer returns the server part of the sender.
func (e *Event) SenderServer() string { return serverOfID(e.sender) }

// Depth returns the depth field (untrusted; never order by it for security).
func (e *Event) Depth() int64 { return e.depth }

// OriginServerTS returns origin_server_ts in milliseconds.
func (e *Event) OriginServerTS() int64 { return e.ts }

// PrevEvents returns the IDs of the events this one follows.
func (e *Event) PrevEvents() []string { return e.prevEvents }

// AuthEvents returns the IDs of the events that authorise this one.
func (e *Event) AuthEvents() []string { return e.authEvents }

// Content returns the event content.
func (e *Event) Content() map[string]any { return e.content }

// JSON returns the event's canonical JSON as stored and sent over the wire.
func (e *Event) JSON() []byte { return e.raw }

// Object returns the parsed event object.
func (e *Event) Object() map[string]any { return e.obj }

// Redacts returns the ID of the event a redaction targets, read from where
// the room version puts it, or "" if there is none.
func (e *Event) Redacts() string {
	if e.typ != "m.room.redaction" {
		return ""
	}
	if e.version.RedactsInContent {
		s, _ := e.content["redacts"].(string)
		return s
	}
	s, _ := e.obj["redacts"].(string)
	return s
}

// Membership returns content.membership of an m.room.member event, or "".
func (e *Event) Membership() string {
	if e.typ != "m.room.member" {
		return ""
	}
	s, _ := e.content["membership"].(string)
	return s
}

// Redacted returns the redacted form of the event, with the same ID.
func (e *Event) Redacted() *Event {
	red := Redact(e.version, e.obj)
	canonical, err := EncodeCanonical(red)
	if err != nil {
		// The redacted form is a subset of values that already encoded.
		canonical = nil
	}
	out := *e
	out.obj = red
	out.raw = canonical
	out.content, _ = red["content"].(map[string]any)
	return &out
}

// ContentHash computes the SHA-256 content hash of an event object: the
// canonical JSON of the event without unsigned, signatures and hashes.
func ContentHash(obj map[string]any) ([sha256.Size]byte, error) {
	stripped := make(map[string]any, len(obj))
	for k, v := range obj {
		switch k {
		case "unsigned", "signatures", "hashes":
			continue
		}
		stripped[k] = v
	}
	b, err := EncodeCanonical(stripped)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("content hash: %w", err)
	}
	return sha256.Sum256(b), nil
}

// ContentHashValid reports whether the event's hashes.sha256 matches its
// content.
func (e *Event) ContentHashValid() bool {
	hashes, _ := e.obj["hashes"].(map[string]any)
	claimed, _ := hashes["sha256"].(string)
	got, err := ContentHash(e.obj)
	if err != nil {
		return false
	}
	want, err := DecodeBase64(claimed)
	return err == nil && string(want) == string(got[:])
}

// ReferenceHash computes the reference hash of an event object under v:
// the SHA-256 of the canonical JSON of the redacted event without
// signatures and unsigned.
func ReferenceHash(v Version, obj map[string]any) ([sha256.Size]byte, error) {
	red := Redact(v, obj)
	delete(red, "signatures")
	delete(red, "unsigned")
	b, err := EncodeCanonical(red)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("reference hash: %w", err)
	}
	return sha256.Sum256(b), nil
}

func computeEventID(v Version, obj map[string]any) (string, error) {
	h, err := ReferenceHash(v, obj)
	if err != nil {
		return "", err
	}
	return "$" + EncodeBase64URL(h[:]), nil
}

// SignEvent fills in hashes.sha256 of obj and adds key's signature over
// the redacted event, as the spec's "Signing events" section describes.
func SignEvent(v Version, obj map[string]any, key SigningKey) error {
	h, err := ContentHash(obj)
	if err != nil {
		return err
	}
	obj["hashes"] = map[string]any{"sha256": EncodeBase64(h[:])}
	red := Redact(v, obj)
	if err := SignJSON(red, key); err != nil {
		return fmt.Errorf("sign event: %w", err)
	}
	obj["signatures"] = red["signatures"]
	return nil
}

// ParseEventTrusted parses an event that was validated before (read back
// from our own database) under its known ID, skipping the format checks and
// the reference-hash computation that ParseEvent does. Test fixtures that
// name events by readable IDs use it too. It still refuses JSON that is not
// a strict canonical-JSON object.
func ParseEventTrusted(v Version, raw []byte, eventID string) (*Event, error) {
	tree, err := ParseJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("event %s: %w", eventID, err)
	}
	obj, ok := tree.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("event %s: %w", eventID, &FormatError{Problems: []string{"event is not a JSON object"}})
	}
	canonical, err := EncodeCanonical(obj)
	if err != nil {
		return nil, fmt.Errorf("event %s: %w", eventID, err)
	}
	return eventFromParts(v, obj, canonical, eventID), nil
}
