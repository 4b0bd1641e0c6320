package rooms

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
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
	// original is the input of ParseEvent when it differs from raw.
	original []byte
	// refInput is the canonical redacted event without signatures and
	// unsigned: the reference hash input and the bytes signatures cover.
	// It is nil for events from ParseEventTrusted until needed.
	refInput  []byte
	hashState int8
}

// ParseEvent parses and checks a PDU of room version v. The event ID is
// computed (the wire format carries none). The error, if any, is a
// *JSONError or a *FormatError listing every rule broken. The event keeps
// raw's canonical form (JSON) and, when raw was not already canonical, a
// copy of raw itself (ReceivedJSON).
func ParseEvent(v Version, raw []byte) (*Event, error) {
	if len(raw) > maxRawEventBytes {
		return nil, &FormatError{Problems: []string{fmt.Sprintf("event is %d bytes, more than the %d-byte limit", len(raw), MaxPDUBytes)}}
	}
	tree, err := ParseJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	return ParseEventTree(v, raw, tree)
}

// ParseEventTree is ParseEvent for a PDU whose bytes raw were already
// parsed by ParseJSON into tree (which the event takes over), so that a
// caller that had to look inside it does not parse it twice.
func ParseEventTree(v Version, raw []byte, tree any) (*Event, error) {
	if len(raw) > maxRawEventBytes {
		return nil, &FormatError{Problems: []string{fmt.Sprintf("event is %d bytes, more than the %d-byte limit", len(raw), MaxPDUBytes)}}
	}
	obj, ok := tree.(map[string]any)
	if !ok {
		return nil, &FormatError{Problems: []string{"event is not a JSON object"}}
	}
	ev, err := newEvent(v, obj)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(ev.raw, raw) {
		ev.original = bytes.Clone(raw)
	}
	return ev, nil
}

// NewEventFromObject checks an already parsed event object (as from
// ParseJSON; the event takes ownership of obj) and returns the Event.
func NewEventFromObject(v Version, obj map[string]any) (*Event, error) {
	return newEvent(v, obj)
}

// newEvent encodes obj once and derives from that one encoding the size,
// the reference hash (hence the event ID and the bytes signatures cover)
// and the content hash.
func newEvent(v Version, obj map[string]any) (*Event, error) {
	canonical, members, err := encodeMembers(make([]byte, 0, 1024), obj)
	if err != nil {
		return nil, &FormatError{Problems: []string{err.Error()}}
	}
	problems := CheckEventFormat(v, obj, len(canonical))
	if len(problems) > 0 {
		return nil, &FormatError{Problems: problems}
	}
	ref, err := referenceInput(v, obj, canonical, members)
	if err != nil {
		return nil, &FormatError{Problems: []string{err.Error()}}
	}
	sum := sha256.Sum256(ref)
	ev := eventFromParts(v, obj, canonical, "$"+EncodeBase64URL(sum[:]))
	ev.refInput = ref
	ev.hashState = contentHashState(obj, canonical, members)
	return ev, nil
}

// referenceInput returns the canonical JSON of the redacted event without
// signatures and unsigned, put together from the members of the event's
// canonical encoding: only content changes under redaction.
func referenceInput(v Version, obj map[string]any, canonical []byte, members []member) ([]byte, error) {
	keep := redactionTopLevel[v.Redaction]
	typ, _ := obj["type"].(string)
	content, _ := obj["content"].(map[string]any)
	out := make([]byte, 0, len(canonical))
	out = append(out, '{')
	first, contentDone := true, false
	appendContent := func() error {
		if !first {
			out = append(out, ',')
		}
		first, contentDone = false, true
		out = append(out, `"content":`...)
		var err error
		out, err = AppendCanonical(out, redactContent(v, typ, content))
		return err
	}
	for _, m := range members {
		if m.key == "signatures" || m.key == "unsigned" || !keep[m.key] {
			continue
		}
		if !contentDone && m.key >= "content" {
			if err := appendContent(); err != nil {
				return nil, err
			}
			if m.key == "content" {
				continue
			}
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, canonical[m.start:m.end]...)
	}
	if !contentDone {
		if err := appendContent(); err != nil {
			return nil, err
		}
	}
	return append(out, '}'), nil
}

// Content hash states cached in Event.hashState.
const (
	hashUnknown int8 = iota
	hashValid
	hashInvalid
)

func contentHashState(obj map[string]any, canonical []byte, members []member) int8 {
	hashes, _ := obj["hashes"].(map[string]any)
	claimed, _ := hashes["sha256"].(string)
	want, err := DecodeBase64(claimed)
	if err != nil || len(want) != sha256.Size {
		return hashInvalid
	}
	input := appendMembers(make([]byte, 0, len(canonical)), canonical, members, contentHashKeeps)
	if got := sha256.Sum256(input); string(want) != string(got[:]) {
		return hashInvalid
	}
	return hashValid
}

// contentHashKeeps reports whether a top-level key is covered by the
// content hash.
func contentHashKeeps(key string) bool {
	return key != "unsigned" && key != "signatures" && key != "hashes"
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

// CheckEventFormat returns every format rule obj breaks for room version v
// ("Checks performed on receipt of a PDU", step 1: the room version's
// event format and the "Size limits" section); canonicalSize is the length
// of its canonical encoding. It checks shape and limits only;
// authorization is separate. Each problem names the field and the rule.
func CheckEventFormat(v Version, obj map[string]any, canonicalSize int) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if canonicalSize > MaxPDUBytes {
		bad("size: event is %d bytes in canonical JSON with signatures, more than %d", canonicalSize, MaxPDUBytes)
	}
	typ, ok := obj["type"].(string)
	switch {
	case !ok:
		bad("type: missing or not a string")
	case len(typ) > MaxTypeBytes:
		bad("type: %d bytes, more than %d", len(typ), MaxTypeBytes)
	}
	if raw, present := obj["state_key"]; present {
		sk, ok := raw.(string)
		if !ok {
			bad("state_key: not a string")
		} else if len(sk) > MaxStateKeyBytes {
			bad("state_key: %d bytes, more than %d", len(sk), MaxStateKeyBytes)
		}
	} else if typ == "m.room.create" {
		bad("state_key: m.room.create must be a state event")
	}
	if sender, ok := obj["sender"].(string); !ok {
		bad("sender: missing or not a string")
	} else if _, err := ParseUserID(sender); err != nil {
		bad("sender: %s", idReason(err))
	}
	checkRoomIDField(v, obj, typ, bad)
	if _, ok := obj["content"].(map[string]any); !ok {
		bad("content: missing or not an object")
	}
	checkEventIDList(obj, "prev_events", MaxPrevEvents, bad)
	checkEventIDList(obj, "auth_events", MaxAuthEvents, bad)
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
		bad("hashes.sha256: not an unpadded base64 SHA-256 digest")
	}
	checkSignaturesField(obj, bad)
	if raw, present := obj["unsigned"]; present {
		if _, ok := raw.(map[string]any); !ok {
			bad("unsigned: not an object")
		}
	}
	if raw, present := obj["redacts"]; present && !v.RedactsInContent {
		if s, ok := raw.(string); !ok {
			bad("redacts: not a string")
		} else if _, err := ParseEventID(s); err != nil {
			bad("redacts: %s", idReason(err))
		}
	}
	return problems
}

// idReason renders an identifier error for a problem list.
func idReason(err error) string {
	var idErr *IDError
	if errors.As(err, &idErr) {
		return fmt.Sprintf("%q is not a valid %s: %s", idErr.Input, idErr.Kind, idErr.Reason)
	}
	return err.Error()
}

func checkRoomIDField(v Version, obj map[string]any, typ string, bad func(string, ...any)) {
	raw, present := obj["room_id"]
	if v.RoomIDs == RoomIDFromCreate && typ == "m.room.create" {
		if present {
			bad("room_id: a version %s create event has none (its ID names the room)", v.ID)
		}
		return
	}
	if !present {
		bad("room_id: missing")
		return
	}
	rid, ok := raw.(string)
	if !ok {
		bad("room_id: not a string")
		return
	}
	if _, err := ParseRoomIDFor(v, rid); err != nil {
		bad("room_id: %s", idReason(err))
	}
}

func checkEventIDList(obj map[string]any, key string, max int, bad func(string, ...any)) {
	arr, ok := obj[key].([]any)
	if !ok {
		bad("%s: missing or not an array", key)
		return
	}
	if len(arr) > max {
		bad("%s: %d entries, more than %d", key, len(arr), max)
	}
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			bad("%s[%d]: not a string", key, i)
			return
		}
		if _, err := ParseEventID(s); err != nil {
			bad("%s[%d]: %s", key, i, idReason(err))
			return
		}
	}
}

// checkSignaturesField checks the shape the PDU schema gives signatures:
// an object of server names to objects of key IDs to strings.
func checkSignaturesField(obj map[string]any, bad func(string, ...any)) {
	sigs, ok := obj["signatures"].(map[string]any)
	if !ok {
		bad("signatures: missing or not an object")
		return
	}
	for _, server := range sortedKeys(sigs) {
		entity, ok := sigs[server].(map[string]any)
		if !ok {
			bad("signatures.%s: not an object", server)
			continue
		}
		for _, keyID := range sortedKeys(entity) {
			if _, ok := entity[keyID].(string); !ok {
				bad("signatures.%s.%s: not a string", server, keyID)
			}
		}
	}
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
	out.original = nil
	out.hashState = hashUnknown
	out.content, _ = red["content"].(map[string]any)
	return &out
}

// signedBytes returns the bytes the event's signatures cover: the
// canonical JSON of the redacted event without signatures and unsigned,
// which is also the reference hash input.
func (e *Event) signedBytes() ([]byte, error) {
	if e.refInput != nil {
		return e.refInput, nil
	}
	red := Redact(e.version, e.obj)
	delete(red, "signatures")
	delete(red, "unsigned")
	return EncodeCanonical(red)
}

// ReceivedJSON returns the bytes the event was parsed from: JSON, unless
// ParseEvent was given a non-canonical encoding, which it keeps.
func (e *Event) ReceivedJSON() []byte {
	if e.original != nil {
		return e.original
	}
	return e.raw
}

// ContentHash computes the SHA-256 content hash of an event object: the
// canonical JSON of the event without unsigned, signatures and hashes.
func ContentHash(obj map[string]any) ([sha256.Size]byte, error) {
	b, err := appendCanonicalFiltered(make([]byte, 0, 1024), obj, contentHashKeeps)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("content hash: %w", err)
	}
	return sha256.Sum256(b), nil
}

// ContentHashValid reports whether the event's hashes.sha256 matches its
// content.
func (e *Event) ContentHashValid() bool {
	if e.hashState != hashUnknown {
		return e.hashState == hashValid
	}
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
