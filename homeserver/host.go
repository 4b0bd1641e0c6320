package homeserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// DefaultHostRoomVersion is the room version of rooms the host creates
// without naming one.
const DefaultHostRoomVersion = "12"

// Bounds of the host plane's reads.
const (
	// MaxMessagesLimit bounds one page of Messages.
	MaxMessagesLimit = 1000
	// MaxEventsLimit bounds one read of the host event stream.
	MaxEventsLimit = 1000
)

// Host is the host plane's operations: what the host product does as its
// local users. Fill the fields before first use; a Host is safe for
// concurrent use.
type Host struct {
	Engine *Engine
	// Delivery may be nil; Destinations then reports an empty list.
	Delivery *Delivery
	// DefaultRoomVersion is the version of rooms created without one;
	// DefaultHostRoomVersion when empty.
	DefaultRoomVersion string
	// AutoRegisterUsers makes act-as-user operations create unknown
	// local users instead of refusing them.
	AutoRegisterUsers bool

	sends   keyedMutex // serializes sends of one (sender, txn ID)
	typists typingTimers
}

// User is a local user as the host sees it.
type User struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// RoomSummary is a room as the host sees it, from its current state.
type RoomSummary struct {
	RoomID           string   `json:"room_id"`
	RoomVersion      string   `json:"room_version"`
	Name             string   `json:"name,omitempty"`
	Topic            string   `json:"topic,omitempty"`
	CanonicalAlias   string   `json:"canonical_alias,omitempty"`
	JoinedLocalUsers []string `json:"joined_local_users"` // sorted, never null
	JoinedMembers    int      `json:"joined_members"`
	Servers          []string `json:"servers"` // servers with joined members, sorted, never null
	// PartialState is true while the room, joined with partial state,
	// lacks its full state (members and servers then count only those
	// known so far).
	PartialState bool `json:"partial_state"`
}

// StreamItem is one entry of the host event stream (the persisted host
// log).
type StreamItem struct {
	Pos    int64  `json:"-"`    // position; the token is strconv.FormatInt(Pos, 10)
	Kind   string `json:"kind"` // "event" | "invite" | "knock" | "edu"
	RoomID string `json:"room_id"`
	// Event is, for event, invite and knock items, the PDU JSON with an
	// added "event_id" field.
	Event json.RawMessage `json:"event,omitempty"`
	// EDU is, for edu items, {"type": ..., "content": ...}.
	EDU json.RawMessage `json:"edu,omitempty"`
}

// EventJSON is an event's JSON as the host sees it: the PDU with its
// computed "event_id" added (room versions 3 and later do not carry it).
func EventJSON(ev *rooms.Event) (json.RawMessage, error) {
	return withEventID(ev.JSON(), ev.EventID())
}

// withEventID adds "event_id" to the JSON object raw. The PDU JSON we hold
// is canonical and never holds the field, so it is spliced in front
// rather than decoding and re-encoding the whole event; an object that
// holds it already is returned unchanged.
func withEventID(raw []byte, eventID string) (json.RawMessage, error) {
	trimmed := strings.TrimSpace(string(raw))
	if len(trimmed) < 2 || trimmed[0] != '{' || trimmed[len(trimmed)-1] != '}' {
		return nil, errors.New("event JSON is not an object")
	}
	var probe struct {
		EventID *string `json:"event_id"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("event JSON: %w", err)
	}
	if probe.EventID != nil {
		return json.RawMessage(trimmed), nil
	}
	id, err := json.Marshal(eventID)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	b.Grow(len(trimmed) + len(id) + 14)
	b.WriteString(`{"event_id":`)
	b.Write(id)
	if body := strings.TrimSpace(trimmed[1 : len(trimmed)-1]); body != "" {
		b.WriteByte(',')
		b.WriteString(body)
	}
	b.WriteByte('}')
	return json.RawMessage(b.String()), nil
}

func (h *Host) store() *store.DB { return h.Engine.Store }

func (h *Host) roomVersionDefault() string {
	if h.DefaultRoomVersion == "" {
		return DefaultHostRoomVersion
	}
	return h.DefaultRoomVersion
}

// localUser parses userID and checks that it is one of ours.
func (h *Host) localUser(userID string) error {
	u, err := rooms.ParseUserID(userID)
	if err != nil {
		return badRequest("user: %v", err)
	}
	if string(u.Server()) != h.Engine.ServerName {
		return badRequest("%s is not a user of %s", userID, h.Engine.ServerName)
	}
	return nil
}

// actor checks that userID may act: a local user that is registered, or
// registered now when AutoRegisterUsers is on.
func (h *Host) actor(ctx context.Context, userID string) error {
	if err := h.localUser(userID); err != nil {
		return err
	}
	_, err := h.store().User(ctx, userID)
	if err == nil {
		return nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("user %s: %w", userID, err)
	}
	if !h.AutoRegisterUsers {
		return forbidden("%s is not a registered user of %s", userID, h.Engine.ServerName)
	}
	if err := h.newUserID(ctx, userID); err != nil {
		return err
	}
	if err := h.store().PutUser(ctx, store.User{ID: userID}); err != nil {
		return fmt.Errorf("register %s: %w", userID, err)
	}
	h.Engine.Logger.Info().Str("user", userID).Msg("user registered on first use")
	return nil
}

// PutUser creates a local user or updates its profile. New users must
// follow the current user ID grammar; users with historical IDs that
// exist already may still be updated.
func (h *Host) PutUser(ctx context.Context, u User) (User, error) {
	if err := h.localUser(u.UserID); err != nil {
		return User{}, err
	}
	if err := h.newUserID(ctx, u.UserID); err != nil {
		return User{}, err
	}
	if err := h.store().PutUser(ctx, store.User{ID: u.UserID, DisplayName: u.DisplayName, AvatarURL: u.AvatarURL}); err != nil {
		return User{}, fmt.Errorf("put user: %w", err)
	}
	return h.User(ctx, u.UserID)
}

// newUserID refuses a user ID outside the current grammar unless the
// user exists already.
func (h *Host) newUserID(ctx context.Context, userID string) error {
	_, strict := rooms.ParseUserIDStrict(userID)
	if strict == nil {
		return nil
	}
	_, err := h.store().User(ctx, userID)
	if errors.Is(err, store.ErrNotFound) {
		return badRequest("user: %v", strict)
	}
	if err != nil {
		return fmt.Errorf("user %s: %w", userID, err)
	}
	return nil
}

// User returns a registered local user.
func (h *Host) User(ctx context.Context, userID string) (User, error) {
	if _, err := rooms.ParseUserID(userID); err != nil {
		return User{}, badRequest("user: %v", err)
	}
	su, err := h.store().User(ctx, userID)
	if errors.Is(err, store.ErrNotFound) {
		return User{}, notFound("user %s is not registered", userID)
	}
	if err != nil {
		return User{}, fmt.Errorf("user: %w", err)
	}
	return User{UserID: su.ID, DisplayName: su.DisplayName, AvatarURL: su.AvatarURL}, nil
}

// Users returns every registered local user, by ID.
func (h *Host) Users(ctx context.Context) ([]User, error) {
	sus, err := h.store().Users(ctx)
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	out := make([]User, 0, len(sus))
	for _, su := range sus {
		out = append(out, User{UserID: su.ID, DisplayName: su.DisplayName, AvatarURL: su.AvatarURL})
	}
	return out, nil
}

// DeleteUser makes a registered local user leave every room where it is
// joined, invited or knocking (best effort: failures are logged), then
// deletes it.
func (h *Host) DeleteUser(ctx context.Context, userID string) error {
	if _, err := h.User(ctx, userID); err != nil {
		return err
	}
	roomIDs, err := h.store().UserRooms(ctx, userID)
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	for _, roomID := range roomIDs {
		via, err := h.leaveServers(ctx, roomID, userID)
		if err == nil {
			_, err = h.Engine.LeaveRoom(ctx, roomID, userID, via)
		}
		if err != nil {
			h.Engine.Logger.Warn().Err(err).Str(fieldRoomID, roomID).Str("user", userID).Msg("deleting a user: leaving the room failed")
			continue
		}
		h.Engine.Logger.Info().Str(fieldRoomID, roomID).Str("user", userID).Msg("deleting a user: left the room")
	}
	if err := h.store().DeleteUser(ctx, userID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("user %s is not registered", userID)
		}
		return fmt.Errorf("delete user: %w", err)
	}
	h.Engine.Logger.Info().Str("user", userID).Int("rooms", len(roomIDs)).Msg("user deleted")
	return nil
}

// CreateRoom creates a room as req.Creator. An empty version is the
// host's default; only the invites failing gives an *InviteError with the
// room ID.
func (h *Host) CreateRoom(ctx context.Context, req CreateRoomRequest) (string, error) {
	if req.Version == "" {
		req.Version = h.roomVersionDefault()
	}
	if _, err := rooms.LookupVersion(req.Version); err != nil {
		return "", withCode(KindBadRequest, "M_UNSUPPORTED_ROOM_VERSION", "room version %q is not supported", req.Version)
	}
	switch req.Preset {
	case "", PresetPublicChat, PresetPrivateChat:
	default:
		return "", badRequest("unknown preset %q", req.Preset)
	}
	for _, u := range req.Invite {
		if err := invitee(u); err != nil {
			return "", err
		}
	}
	for _, u := range req.AdditionalCreators {
		if _, err := rooms.ParseUserID(u); err != nil {
			return "", badRequest("additional creator: %v", err)
		}
	}
	if req.Alias != "" {
		if err := h.ourAlias(req.Alias); err != nil {
			return "", err
		}
		if _, err := h.store().Alias(ctx, req.Alias); err == nil {
			return "", withCode(KindConflict, "M_ROOM_IN_USE", "alias %s is taken", req.Alias)
		} else if !errors.Is(err, store.ErrNotFound) {
			return "", fmt.Errorf("create room: alias: %w", err)
		}
	}
	if err := h.actor(ctx, req.Creator); err != nil {
		return "", err
	}
	roomID, err := h.Engine.CreateRoom(ctx, req)
	if errors.Is(err, store.ErrConflict) {
		// The alias was taken between the check above and its
		// creation; the room exists without it.
		return roomID, withCode(KindConflict, "M_ROOM_IN_USE", "room %s was created, but alias %s was taken meanwhile", roomID, req.Alias)
	}
	return roomID, err
}

// resolveRoom turns a room ID or an alias into a room ID and the servers
// to go through (the alias's, then the ones it names, then via).
func (h *Host) resolveRoom(ctx context.Context, roomIDOrAlias string, via []string) (string, []string, error) {
	if !strings.HasPrefix(roomIDOrAlias, "#") {
		r, err := rooms.ParseRoomID(roomIDOrAlias)
		if err != nil {
			return "", nil, badRequest("room: %v", err)
		}
		// A room ID that names a server (versions before 12) offers
		// it when the caller names none.
		if server, ok := r.Server(); ok && len(via) == 0 && string(server) != h.Engine.ServerName {
			via = []string{string(server)}
		}
		return roomIDOrAlias, via, nil
	}
	roomID, servers, err := h.Alias(ctx, roomIDOrAlias)
	if err != nil {
		return "", nil, err
	}
	a, _ := rooms.ParseRoomAlias(roomIDOrAlias)
	out := []string{string(a.Server())}
	for _, s := range slices.Concat(servers, via) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return roomID, out, nil
}

// JoinRoom joins a local user to a room named by ID or alias.
func (h *Host) JoinRoom(ctx context.Context, roomIDOrAlias, userID string, via []string) (string, string, error) {
	if err := h.actor(ctx, userID); err != nil {
		return "", "", err
	}
	roomID, via, err := h.resolveRoom(ctx, roomIDOrAlias, via)
	if err != nil {
		return "", "", err
	}
	ev, err := h.Engine.JoinRoom(ctx, roomID, userID, via)
	if err != nil {
		return "", "", remoteFailure(err)
	}
	return roomID, ev.EventID(), nil
}

// remoteFailure turns "every server failed" into an Unavailable refusal
// (502), keeping refusals and internal errors as they are.
func remoteFailure(err error) error {
	var refusal *Error
	if errors.As(err, &refusal) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, ErrEveryServerFailed) {
		return unavailable("%v", err)
	}
	return err
}

// Invite invites userID to roomID as sender, a local user joined there.
func (h *Host) Invite(ctx context.Context, roomID, sender, userID string) (string, error) {
	if err := h.actor(ctx, sender); err != nil {
		return "", err
	}
	if err := h.knownRoom(ctx, roomID); err != nil {
		return "", err
	}
	if err := invitee(userID); err != nil {
		return "", err
	}
	ev, err := h.Engine.Invite(ctx, roomID, sender, userID)
	if err != nil {
		return "", err
	}
	return ev.EventID(), nil
}

// invitee checks the ID of a user to invite. Local invitees need not be
// registered: the contract leaves registration to the acting users, and
// an invite names a user the host may register later.
func invitee(userID string) error {
	if _, err := rooms.ParseUserID(userID); err != nil {
		return badRequest("invitee: %v", err)
	}
	return nil
}

// knownRoom checks that roomID parses and is held here.
func (h *Host) knownRoom(ctx context.Context, roomID string) error {
	if _, err := rooms.ParseRoomID(roomID); err != nil {
		return badRequest("room: %v", err)
	}
	if _, err := h.store().Room(ctx, roomID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("room %s is not known here", roomID)
		}
		return fmt.Errorf("room %s: %w", roomID, err)
	}
	return nil
}

// Leave makes a local user leave a room (or reject an invite, or rescind
// a knock) with an optional reason.
func (h *Host) Leave(ctx context.Context, roomID, userID, reason string) (string, error) {
	if err := h.actor(ctx, userID); err != nil {
		return "", err
	}
	if err := h.knownRoom(ctx, roomID); err != nil {
		return "", err
	}
	via, err := h.leaveServers(ctx, roomID, userID)
	if err != nil {
		return "", err
	}
	ev, err := h.Engine.LeaveRoomWithReason(ctx, roomID, userID, reason, via)
	if err != nil {
		return "", remoteFailure(err)
	}
	return ev.EventID(), nil
}

// leaveServers names the servers to leave a room through when none of our
// users is in it (rejecting an invite, rescinding a knock): the server of
// whoever sent the user's membership event (the inviter), then the one
// the room ID names. The engine uses them only when it must.
func (h *Host) leaveServers(ctx context.Context, roomID, userID string) ([]string, error) {
	here, _, err := h.Engine.joinedHere(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("leave %s: %w", roomID, err)
	}
	if here {
		return nil, nil // an ordinary local event
	}
	var via []string
	add := func(s string) {
		if s != "" && s != h.Engine.ServerName && !slices.Contains(via, s) {
			via = append(via, s)
		}
	}
	se, err := h.store().LatestMembership(ctx, roomID, userID)
	switch {
	case err == nil:
		add(se.Event.SenderServer())
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("leave %s: %w", roomID, err)
	}
	if r, err := rooms.ParseRoomID(roomID); err == nil {
		if server, ok := r.Server(); ok {
			add(string(server))
		}
	}
	return via, nil
}

// Kick makes userID leave roomID by sender's hand.
func (h *Host) Kick(ctx context.Context, roomID, sender, userID, reason string) (string, error) {
	return h.moderate(ctx, roomID, sender, userID, "leave", reason)
}

// Ban bans userID from roomID.
func (h *Host) Ban(ctx context.Context, roomID, sender, userID, reason string) (string, error) {
	return h.moderate(ctx, roomID, sender, userID, "ban", reason)
}

// Unban lifts userID's ban from roomID (membership leave from ban).
func (h *Host) Unban(ctx context.Context, roomID, sender, userID, reason string) (string, error) {
	if err := h.knownRoom(ctx, roomID); err != nil {
		return "", err
	}
	if _, err := rooms.ParseUserID(userID); err != nil {
		return "", badRequest("user: %v", err)
	}
	m, err := h.membership(ctx, roomID, userID)
	if err != nil {
		return "", err
	}
	if m != "ban" {
		return "", forbidden("%s is not banned from %s", userID, roomID)
	}
	return h.moderate(ctx, roomID, sender, userID, "leave", reason)
}

// membership returns userID's current membership in roomID ("" none).
func (h *Host) membership(ctx context.Context, roomID, userID string) (string, error) {
	id, err := h.store().CurrentStateEvent(ctx, roomID, store.StateKey{Type: "m.room.member", StateKey: userID})
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("membership of %s: %w", userID, err)
	}
	se, err := h.Engine.storedEvent(ctx, id)
	if err != nil {
		return "", fmt.Errorf("membership of %s: %w", userID, err)
	}
	return se.Event.Membership(), nil
}

// moderate sends sender's membership event about target.
func (h *Host) moderate(ctx context.Context, roomID, sender, target, membership, reason string) (string, error) {
	if err := h.actor(ctx, sender); err != nil {
		return "", err
	}
	if _, err := rooms.ParseUserID(target); err != nil {
		return "", badRequest("user: %v", err)
	}
	if err := h.knownRoom(ctx, roomID); err != nil {
		return "", err
	}
	if sender == target {
		return "", badRequest("%s cannot kick, ban or unban itself (leave the room instead)", sender)
	}
	content := map[string]any{"membership": membership}
	if reason != "" {
		content["reason"] = reason
	}
	ev, err := h.Engine.SendEvent(ctx, roomID, LocalEvent{Type: "m.room.member", StateKey: rooms.StringPtr(target), Sender: sender, Content: content})
	if err != nil {
		return "", err
	}
	return ev.EventID(), nil
}

// Knock knocks on a room named by ID or alias for a local user.
func (h *Host) Knock(ctx context.Context, roomIDOrAlias, userID, reason string, via []string) (string, error) {
	if err := h.actor(ctx, userID); err != nil {
		return "", err
	}
	roomID, via, err := h.resolveRoom(ctx, roomIDOrAlias, via)
	if err != nil {
		return "", err
	}
	ev, err := h.Engine.KnockRoom(ctx, roomID, userID, reason, via)
	if err != nil {
		return "", remoteFailure(err)
	}
	return ev.EventID(), nil
}

// Send sends a message event as sender. A non-empty txnID makes the send
// idempotent: the same (sender, txnID) always gives the first event's ID
// and never a second event.
func (h *Host) Send(ctx context.Context, roomID, sender, eventType string, content map[string]any, txnID string) (string, error) {
	content, err := h.checkLocalEvent(ctx, roomID, sender, eventType, content)
	if err != nil {
		return "", err
	}
	le := LocalEvent{Type: eventType, Sender: sender, Content: content}
	if txnID == "" {
		ev, err := h.Engine.SendEvent(ctx, roomID, le)
		if err != nil {
			return "", err
		}
		return ev.EventID(), nil
	}
	return h.sendOnce(ctx, roomID, le, txnID)
}

// checkLocalEvent checks what every event the host sends needs: a type,
// a registered sender, a room we hold, and content that canonical JSON
// can hold within an event's size; it returns the content normalized.
func (h *Host) checkLocalEvent(ctx context.Context, roomID, sender, eventType string, content map[string]any) (map[string]any, error) {
	if eventType == "" {
		return nil, badRequest("event type is required")
	}
	if err := h.actor(ctx, sender); err != nil {
		return nil, err
	}
	if err := h.knownRoom(ctx, roomID); err != nil {
		return nil, err
	}
	if content == nil {
		content = map[string]any{}
	}
	content, err := normalizeContent(content)
	if err != nil {
		return nil, err
	}
	if err := checkContentSize(content); err != nil {
		return nil, err
	}
	return content, nil
}

// checkContentSize refuses content that cannot fit in an event
// (M_TOO_LARGE); an event just over the limit once its envelope is added
// is refused by the event builder (400).
func checkContentSize(content map[string]any) error {
	raw, err := json.Marshal(content)
	if err != nil {
		return badRequest("content: %v", err)
	}
	if len(raw) > rooms.MaxPDUBytes {
		return withCode(KindBadRequest, "M_TOO_LARGE", "content is %d bytes; an event may hold at most %d", len(raw), rooms.MaxPDUBytes)
	}
	return nil
}

// SetState sets a state event as sender.
func (h *Host) SetState(ctx context.Context, roomID, sender, eventType, stateKey string, content map[string]any) (string, error) {
	content, err := h.checkLocalEvent(ctx, roomID, sender, eventType, content)
	if err != nil {
		return "", err
	}
	ev, err := h.Engine.SendEvent(ctx, roomID, LocalEvent{Type: eventType, StateKey: rooms.StringPtr(stateKey), Sender: sender, Content: content})
	if err != nil {
		return "", err
	}
	return ev.EventID(), nil
}

// Redact redacts an event of the room as sender, with an optional reason.
func (h *Host) Redact(ctx context.Context, roomID, sender, eventID, reason string) (string, error) {
	if err := h.actor(ctx, sender); err != nil {
		return "", err
	}
	if err := h.knownRoom(ctx, roomID); err != nil {
		return "", err
	}
	if _, err := rooms.ParseEventID(eventID); err != nil {
		return "", badRequest("event: %v", err)
	}
	if _, err := h.Engine.roomEvent(ctx, roomID, eventID); err != nil {
		return "", err
	}
	content := map[string]any{}
	if reason != "" {
		content["reason"] = reason
	}
	ev, err := h.Engine.SendEvent(ctx, roomID, LocalEvent{Type: "m.room.redaction", Sender: sender, Content: content, Redacts: eventID})
	if err != nil {
		return "", err
	}
	return ev.EventID(), nil
}

// Typing tells the other servers in the room that userID is typing (or
// stopped). A typing notice with a timeout is withdrawn when the timeout
// passes without a renewal.
func (h *Host) Typing(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error {
	if err := h.actor(ctx, userID); err != nil {
		return err
	}
	if err := h.knownRoom(ctx, roomID); err != nil {
		return err
	}
	if err := h.Engine.SendTyping(ctx, roomID, userID, typing); err != nil {
		return err
	}
	if typing && timeout > 0 {
		h.typists.start(roomID, userID, timeout, func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := h.Engine.SendTyping(stopCtx, roomID, userID, false); err != nil {
				h.Engine.Logger.Warn().Err(err).Str(fieldRoomID, roomID).Str("user", userID).Msg("withdrawing a typing notice after its timeout failed")
			}
		})
	} else {
		h.typists.stop(roomID, userID)
	}
	return nil
}

// Receipt sends a read receipt (or another receipt type) of userID for an
// event of the room.
func (h *Host) Receipt(ctx context.Context, roomID, userID, receiptType, eventID string) error {
	if receiptType == "" {
		receiptType = "m.read"
	}
	if err := h.actor(ctx, userID); err != nil {
		return err
	}
	if err := h.knownRoom(ctx, roomID); err != nil {
		return err
	}
	if _, err := rooms.ParseEventID(eventID); err != nil {
		return badRequest("event: %v", err)
	}
	if _, err := h.Engine.roomEvent(ctx, roomID, eventID); err != nil {
		return err
	}
	return h.Engine.SendReceipt(ctx, roomID, userID, receiptType, eventID, h.Engine.now().UnixMilli())
}

// Rooms returns the summaries of the rooms with at least one joined local
// user, by room ID.
func (h *Host) Rooms(ctx context.Context) ([]RoomSummary, error) {
	all, err := h.store().Rooms(ctx)
	if err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
	}
	out := []RoomSummary{}
	for _, r := range all {
		if r.Status != store.RoomCreated && r.Status != store.RoomJoined {
			continue
		}
		s, err := h.summary(ctx, r)
		if err != nil {
			return nil, err
		}
		if len(s.JoinedLocalUsers) > 0 {
			out = append(out, s)
		}
	}
	return out, nil
}

// Room returns the summary of a room known here.
func (h *Host) Room(ctx context.Context, roomID string) (RoomSummary, error) {
	if _, err := rooms.ParseRoomID(roomID); err != nil {
		return RoomSummary{}, badRequest("room: %v", err)
	}
	r, err := h.store().Room(ctx, roomID)
	if errors.Is(err, store.ErrNotFound) {
		return RoomSummary{}, notFound("room %s is not known here", roomID)
	}
	if err != nil {
		return RoomSummary{}, fmt.Errorf("room: %w", err)
	}
	return h.summary(ctx, r)
}

// summary reads a room's summary from its current state.
func (h *Host) summary(ctx context.Context, r store.Room) (RoomSummary, error) {
	s := RoomSummary{RoomID: r.ID, RoomVersion: r.Version, JoinedLocalUsers: []string{}, Servers: []string{},
		PartialState: h.Engine.isPartialRoom(ctx, r.ID)}
	// Three keyed look-ups rather than the whole state: a large room's
	// members would dominate it.
	text := func(typ, field string) (string, error) {
		id, err := h.store().CurrentStateEvent(ctx, r.ID, store.StateKey{Type: typ})
		if errors.Is(err, store.ErrNotFound) {
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("room %s: %s: %w", r.ID, typ, err)
		}
		se, err := h.Engine.storedEvent(ctx, id)
		if err != nil {
			return "", fmt.Errorf("room %s: %s: %w", r.ID, typ, err)
		}
		v, _ := se.Event.Content()[field].(string)
		return v, nil
	}
	var err error
	if s.Name, err = text("m.room.name", "name"); err != nil {
		return s, err
	}
	if s.Topic, err = text("m.room.topic", "topic"); err != nil {
		return s, err
	}
	if s.CanonicalAlias, err = text("m.room.canonical_alias", "alias"); err != nil {
		return s, err
	}
	joined, err := h.store().Members(ctx, r.ID, "join")
	if err != nil {
		return s, fmt.Errorf("room %s: %w", r.ID, err)
	}
	s.JoinedMembers = len(joined)
	for _, u := range joined {
		if serverOf(u) == h.Engine.ServerName {
			s.JoinedLocalUsers = append(s.JoinedLocalUsers, u)
		}
	}
	slices.Sort(s.JoinedLocalUsers)
	servers, err := h.store().JoinedServers(ctx, r.ID)
	if err != nil {
		return s, fmt.Errorf("room %s: %w", r.ID, err)
	}
	if servers != nil {
		s.Servers = servers
	}
	slices.Sort(s.Servers)
	return s, nil
}

// State returns the current state events of a room, each with its
// "event_id", ordered by type and state key.
func (h *Host) State(ctx context.Context, roomID string) ([]json.RawMessage, error) {
	if err := h.knownRoom(ctx, roomID); err != nil {
		return nil, err
	}
	cur, err := h.store().CurrentState(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	keys := make([]store.StateKey, 0, len(cur))
	for k := range cur {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b store.StateKey) int {
		if c := strings.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.StateKey, b.StateKey)
	})
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = cur[k]
	}
	evs, err := h.store().Events(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	byID := make(map[string]*store.StoredEvent, len(evs))
	for _, se := range evs {
		byID[se.Event.EventID()] = se
	}
	out := make([]json.RawMessage, 0, len(ids))
	for _, id := range ids {
		se, ok := byID[id]
		if !ok {
			return nil, fmt.Errorf("state: event %s is not held", id)
		}
		raw, err := EventJSON(se.Event)
		if err != nil {
			return nil, fmt.Errorf("state: %w", err)
		}
		out = append(out, raw)
	}
	return out, nil
}

// ourAlias checks that alias parses and is one of ours.
func (h *Host) ourAlias(alias string) error {
	a, err := rooms.ParseRoomAlias(alias)
	if err != nil {
		return badRequest("alias: %v", err)
	}
	if string(a.Server()) != h.Engine.ServerName {
		return badRequest("alias %s is not an alias of %s", alias, h.Engine.ServerName)
	}
	return nil
}

// PutAlias points a new alias of ours at a room known here.
func (h *Host) PutAlias(ctx context.Context, alias, roomID string) error {
	if err := h.ourAlias(alias); err != nil {
		return err
	}
	if err := h.knownRoom(ctx, roomID); err != nil {
		return err
	}
	err := h.store().PutAlias(ctx, store.Alias{Alias: alias, RoomID: roomID, Servers: []string{h.Engine.ServerName}})
	if errors.Is(err, store.ErrConflict) {
		return withCode(KindConflict, "M_ROOM_IN_USE", "alias %s is taken", alias)
	}
	if err != nil {
		return fmt.Errorf("put alias: %w", err)
	}
	return nil
}

// Alias resolves an alias: ours from the store, another server's over
// federation.
func (h *Host) Alias(ctx context.Context, alias string) (string, []string, error) {
	a, err := rooms.ParseRoomAlias(alias)
	if err != nil {
		return "", nil, badRequest("alias: %v", err)
	}
	if string(a.Server()) == h.Engine.ServerName {
		roomID, servers, err := h.Engine.ResolveAlias(ctx, alias)
		if err != nil {
			return "", nil, err
		}
		if servers == nil {
			servers = []string{}
		}
		return roomID, servers, nil
	}
	resolver, ok := h.Engine.Remote.(AliasResolver)
	if !ok {
		return "", nil, unavailable("alias %s: this server cannot ask other servers", alias)
	}
	roomID, servers, err := resolver.ResolveRoomAlias(ctx, alias)
	if err != nil {
		if isRemoteNotFound(err) {
			return "", nil, notFound("alias %s is unknown to %s", alias, a.Server())
		}
		return "", nil, unavailable("alias %s: %v", alias, err)
	}
	if servers == nil {
		servers = []string{}
	}
	return roomID, servers, nil
}

// isRemoteNotFound reports whether a federation error is the other
// server's 404 (errors of the federation package carry a StatusCode
// method through errors.As on this small interface).
func isRemoteNotFound(err error) bool {
	var status interface{ HTTPStatus() int }
	if errors.As(err, &status) {
		return status.HTTPStatus() == 404
	}
	return false
}

// DeleteAlias removes an alias of ours.
func (h *Host) DeleteAlias(ctx context.Context, alias string) error {
	if err := h.ourAlias(alias); err != nil {
		return err
	}
	err := h.store().DeleteAlias(ctx, alias)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("alias %s is unknown", alias)
	}
	if err != nil {
		return fmt.Errorf("delete alias: %w", err)
	}
	return nil
}

// Destinations returns the delivery state of every destination.
func (h *Host) Destinations(ctx context.Context) ([]DestinationHealth, error) {
	if h.Delivery == nil {
		return []DestinationHealth{}, nil
	}
	out, err := h.Delivery.Health(ctx)
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []DestinationHealth{}
	}
	return out, nil
}

// Events returns up to limit items of the host event stream after
// position since, in order.
func (h *Host) Events(ctx context.Context, since int64, limit int) ([]StreamItem, error) {
	if since < 0 {
		return nil, badRequest("since must not be negative")
	}
	if limit <= 0 || limit > MaxEventsLimit {
		return nil, badRequest("limit must be between 1 and %d", MaxEventsLimit)
	}
	recs, err := h.store().ReadHostLog(ctx, since, limit)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	out := make([]StreamItem, 0, len(recs))
	versions := map[string]rooms.Version{}
	for _, r := range recs {
		item, err := h.streamItem(ctx, r, versions)
		if err != nil {
			// A damaged entry is passed on as it is, not skipped:
			// skipping the last entry of a read would leave the
			// consumer's position before it, reading it again forever.
			h.Engine.Logger.Error().Err(err).Int64("pos", r.Pos).Str("kind", r.Kind).Msg("host log entry damaged; passed on without event_id")
		}
		out = append(out, item)
	}
	return out, nil
}

// streamItem converts a host log record. On error the item carries the
// stored payload as it is, when it is JSON.
func (h *Host) streamItem(ctx context.Context, r store.HostLogRecord, versions map[string]rooms.Version) (StreamItem, error) {
	item := StreamItem{Pos: r.Pos, Kind: r.Kind, RoomID: r.RoomID}
	asIs := func(err error) (StreamItem, error) {
		if json.Valid(r.Payload) {
			if r.Kind == store.HostEDU {
				item.EDU = json.RawMessage(r.Payload)
			} else {
				item.Event = json.RawMessage(r.Payload)
			}
		}
		return item, err
	}
	switch r.Kind {
	case store.HostEvent:
		raw, err := withEventID(r.Payload, r.EventID)
		if err != nil {
			return asIs(fmt.Errorf("event %s: %w", r.EventID, err))
		}
		item.Event = raw
	case store.HostInvite, store.HostKnock:
		if r.EventID != "" {
			// A knock accepted into a room of ours is held in the room.
			raw, err := withEventID(r.Payload, r.EventID)
			if err != nil {
				return asIs(fmt.Errorf("event %s: %w", r.EventID, err))
			}
			item.Event = raw
			break
		}
		id, err := h.payloadEventID(ctx, r.Payload, r.RoomID, versions)
		if err != nil {
			return asIs(err)
		}
		raw, err := withEventID(r.Payload, id)
		if err != nil {
			return asIs(err)
		}
		item.Event = raw
	case store.HostEDU:
		if !json.Valid(r.Payload) {
			return item, errors.New("EDU payload is not JSON")
		}
		item.EDU = json.RawMessage(r.Payload)
	default:
		return asIs(fmt.Errorf("unknown kind %q", r.Kind))
	}
	return item, nil
}

// payloadEventID computes the event ID of an event logged by value (an
// invite or a knock) in the version of its room, or, for a room not held,
// the first supported version it parses in (parseAnyVersion).
func (h *Host) payloadEventID(ctx context.Context, raw []byte, roomID string, versions map[string]rooms.Version) (string, error) {
	v, ok := versions[roomID]
	if !ok {
		if room, err := h.store().Room(ctx, roomID); err == nil {
			if rv, err := rooms.LookupVersion(room.Version); err == nil {
				v, ok = rv, true
				versions[roomID] = rv
			}
		}
	}
	if ok {
		ev, err := rooms.ParseEvent(v, raw)
		if err != nil {
			return "", fmt.Errorf("logged event: %w", err)
		}
		return ev.EventID(), nil
	}
	ev := parseAnyVersion(raw, roomID)
	if ev == nil {
		return "", errors.New("logged event does not parse in any supported room version")
	}
	return ev.EventID(), nil
}

// WaitEvents returns nil once the host event stream has an item after
// position since, or ctx's error.
func (h *Host) WaitEvents(ctx context.Context, since int64) error {
	return h.store().WaitHostLog(ctx, since)
}

// Close stops the host's timers (typing notices waiting to be
// withdrawn). Call it before closing the store; the operations must not be
// used afterwards.
func (h *Host) Close() {
	h.typists.stopAll()
}

// StreamToken is the token of a stream position.
func StreamToken(pos int64) string { return strconv.FormatInt(pos, 10) }
