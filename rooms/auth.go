package rooms

import (
	"errors"
	"fmt"
)

// Authorization rules (room versions 10 and 12).
//
// The spec's rules are numbered per room version, and version 12 renumbers
// them (its rule 2 is new, so v10 rule N is v12 rule N+1 from rule 2 on,
// and v12 skips 3.4). Each check below cites both numbers as "v10 x / v12 y".
//
// Which layer checks what:
//   - Format, sizes, the sender's signature and, for joins carrying
//     join_authorised_via_users_server, the authorising server's signature
//     are verified by ParseEvent and VerifyEventSignatures (through
//     RequiredSigners) before auth runs; they need keys from the network.
//   - CheckAuthEvents applies the rules about the auth_events list (v10
//     rule 2, v12 rules 2 and 3) and then CheckAuth on the state those
//     events form (the spec's "auth rules based on the event's auth events").
//   - CheckAuth applies the state-dependent rules against any state (the
//     state before the event, or the current state for soft-failure). For
//     rule v10 4.2 / v12 5.2 it checks that the event carries a signature
//     from the authorising user's server; that the signature verifies is
//     VerifyEventSignatures' job. Third-party-invite signatures are fully
//     verified here: their keys are in the room state.
//   - Whether a redaction may be applied to its target is RedactionAllowed;
//     the redaction event itself passes the rules like any event.

// ErrNotAuthorized is matched by every *AuthError.
var ErrNotAuthorized = errors.New("not authorized")

// AuthError is a rejection by the authorization rules: Rule names the rule
// group ("event" for a nil event, "create", "room_id", "auth_events", "federate", "membership",
// "sender", "third_party_invite", "power_level", "state_key",
// "power_levels") and Reason says, in a stable sentence, what failed.
type AuthError struct {
	EventID string
	Rule    string
	Reason  string
}

// Error returns Rule + ": " + Reason, e.g. "membership: sender is banned".
func (e *AuthError) Error() string { return e.Rule + ": " + e.Reason }

// Unwrap lets callers match ErrNotAuthorized.
func (e *AuthError) Unwrap() error { return ErrNotAuthorized }

func reject(ev *Event, rule, format string, args ...any) *AuthError {
	return &AuthError{EventID: ev.EventID(), Rule: rule, Reason: fmt.Sprintf(format, args...)}
}

// authCheck carries what the rules read while judging one event.
type authCheck struct {
	ev     *Event
	v      Version
	state  map[StateTuple]*Event
	create *Event
	pl     levels
}

// CheckAuth applies the state-dependent authorization rules of ev's room
// version to ev against state, the room state to judge it by (the state its
// auth events form, the state before it, or the current state). state must
// hold the room's create event under ("m.room.create", "") in every
// version (in version 12 it is implied by the room ID, not listed in
// auth_events); it is not consulted when ev is itself the create event.
// It returns nil if ev is allowed, else an *AuthError naming the rule.
// state is only read.
func CheckAuth(ev *Event, state map[StateTuple]*Event) error {
	if ev == nil {
		return &AuthError{Rule: "event", Reason: "no event to judge"}
	}
	if err := checkAuth(ev, state); err != nil {
		return err
	}
	return nil
}

func checkAuth(ev *Event, state map[StateTuple]*Event) *AuthError {
	v := ev.Version()
	// v10 1 / v12 1: the create event.
	if ev.Type() == typeCreate {
		return checkCreate(ev)
	}
	create := state[CreateTuple]
	if create == nil {
		// v10 2.4 (there is no create event among the auth events) and
		// v12 2 (room_id names no accepted create event) in terms of state.
		return reject(ev, "auth_events", "the room state has no m.room.create event")
	}
	if create.RoomID() != ev.RoomID() {
		// v12 2: room_id must be the create event's ID with '!'.
		// v10 2.5 (room mismatch) applied to the create the state holds.
		return reject(ev, "room_id", "room ID %s is not that of the room's create event (%s)", ev.RoomID(), create.RoomID())
	}
	// v10 3 / v12 4: m.federate.
	if fed, ok := create.Content()["m.federate"].(bool); ok && !fed && ev.SenderServer() != create.SenderServer() {
		return reject(ev, "federate", "the room is not federated (m.federate is false) and the sender's server %s is not the creator's %s", ev.SenderServer(), create.SenderServer())
	}
	pl, err := levelsOf(create, state[StateTuple{typePowerLevels, ""}])
	if err != nil {
		return reject(ev, "power_levels", "the room's power levels are unusable: %v", err)
	}
	c := &authCheck{ev: ev, v: v, state: state, create: create, pl: pl}
	// v10 4 / v12 5: membership events.
	if ev.Type() == typeMember {
		return c.checkMembership()
	}
	// v10 5 / v12 6: the sender must be joined.
	if m := c.membership(ev.Sender()); m != membershipJoin {
		return reject(ev, "sender", "sender is not joined to the room (membership %s)", m)
	}
	senderPower := pl.user(ev.Sender())
	// v10 6 / v12 7: m.room.third_party_invite needs the invite level.
	if ev.Type() == typeThirdPartyInvite {
		if senderPower.less(finite(pl.invite())) {
			return reject(ev, "third_party_invite", "sender's power level %s is below the invite level %d", senderPower, pl.invite())
		}
		return nil
	}
	// v10 7 / v12 8: the event type's required power level.
	if required := pl.eventLevel(ev.Type(), ev.IsState()); senderPower.less(finite(required)) {
		return reject(ev, "power_level", "sender's power level %s is below the %d required for %s", senderPower, required, describeType(ev))
	}
	// v10 8 / v12 9: state keys naming a user belong to that user.
	if sk, ok := ev.StateKey(); ok && len(sk) > 0 && sk[0] == '@' && sk != ev.Sender() {
		return reject(ev, "state_key", "state key %q starts with '@' and is not the sender", sk)
	}
	// v10 9 / v12 10: power-levels changes.
	if ev.Type() == typePowerLevels {
		return c.checkPowerLevels()
	}
	// v10 10 / v12 11: otherwise, allow.
	return nil
}

func describeType(ev *Event) string {
	if ev.IsState() {
		return "state event " + ev.Type()
	}
	return "event " + ev.Type()
}

// membership returns user's membership in the state, "leave" if the state
// has no member event for them.
func (c *authCheck) membership(user string) string {
	if m := c.state[StateTuple{typeMember, user}]; m != nil {
		if s := m.Membership(); s != "" {
			return s
		}
	}
	return membershipLeave
}

// joinRule returns the room's join rule, "" if there is no join-rules event.
func (c *authCheck) joinRule() string {
	if jr := c.state[StateTuple{typeJoinRules, ""}]; jr != nil {
		s, _ := jr.Content()["join_rule"].(string)
		return s
	}
	return ""
}

// checkCreate applies v10 rule 1 / v12 rule 1 to a create event.
func checkCreate(ev *Event) *AuthError {
	v := ev.Version()
	// v10 1.1 / v12 1.1: no prev_events.
	if len(ev.PrevEvents()) > 0 {
		return reject(ev, "create", "the create event has prev_events")
	}
	switch v.RoomIDs {
	case RoomIDOpaque:
		// v10 1.2: the room ID's domain must be the sender's.
		if serverOfID(ev.RoomID()) != ev.SenderServer() {
			return reject(ev, "create", "the room ID's server %q is not the sender's server %q", serverOfID(ev.RoomID()), ev.SenderServer())
		}
	case RoomIDFromCreate:
		// v12 1.2: the create event has no room_id (it is derived).
		if _, has := ev.Object()["room_id"]; has {
			return reject(ev, "create", "the create event has a room_id")
		}
	default:
		return reject(ev, "create", "room version %s has an unknown room ID scheme", v.ID)
	}
	// v10 1.3 / v12 1.3: a recognised room_version, if present.
	if raw, present := ev.Content()["room_version"]; present {
		id, ok := raw.(string)
		if !ok {
			return reject(ev, "create", "content.room_version is not a string")
		}
		if _, err := LookupVersion(id); err != nil {
			return reject(ev, "create", "content.room_version %q is not a recognised version", id)
		}
	}
	// v10 1.4: content.creator is required.
	if v.CreateHasCreator {
		if _, present := ev.Content()["creator"]; !present {
			return reject(ev, "create", "content has no creator")
		}
	}
	// v12 1.4: additional_creators must be an array of valid user IDs.
	if v.Creators == CreatorSenderPrivileged {
		if raw, present := ev.Content()["additional_creators"]; present {
			arr, ok := raw.([]any)
			if !ok {
				return reject(ev, "create", "content.additional_creators is not an array")
			}
			for i, e := range arr {
				s, ok := e.(string)
				if !ok {
					return reject(ev, "create", "content.additional_creators[%d] is not a valid user ID (not a string)", i)
				}
				// "the same user ID validation applied to sender": the
				// grammar servers accept over federation.
				if _, err := ParseUserID(s); err != nil {
					return reject(ev, "create", "content.additional_creators[%d] is not a valid user ID (%s)", i, idProblem(err))
				}
			}
		}
	}
	// v10 1.5 / v12 1.5: otherwise, allow.
	return nil
}

// CheckAuthEvents judges ev against its own auth events, the spec's check
// "passes authorization rules based on the event's auth events": first the
// rules about the auth_events list (v10 rule 2; v12 rules 2 and 3):
// duplicates, entries the auth-events selection would not pick, rejected
// entries, the create event's presence (v10) or absence (v12), entries from
// another room; then CheckAuth against the state those events form.
//
// authEvents are the events ev lists, resolved by the caller; every listed
// ID must be supplied (one that is missing or not listed is reported as a
// rejection by rule "auth_events"). create is the room's create event,
// required in version 12 where it is not listed; in version 10 it may be
// nil, and if given it must be the one listed. isRejected reports whether
// an event was rejected (nil means none was). A create event ev is judged by
// rule 1 alone.
func CheckAuthEvents(ev *Event, authEvents []*Event, create *Event, isRejected func(eventID string) bool) error {
	if ev == nil {
		return &AuthError{Rule: "event", Reason: "no event to judge"}
	}
	if err := checkAuthEvents(ev, authEvents, create, isRejected); err != nil {
		return err
	}
	return nil
}

func checkAuthEvents(ev *Event, authEvents []*Event, create *Event, isRejected func(eventID string) bool) *AuthError {
	if ev.Type() == typeCreate {
		// v10 1 / v12 1 decide create events before the auth_events rules.
		return checkCreate(ev)
	}
	if isRejected == nil {
		isRejected = func(string) bool { return false }
	}
	v := ev.Version()
	if !v.CreateInAuthEvents {
		// v12 2: room_id must name an accepted create event.
		if create == nil {
			return reject(ev, "room_id", "the room's create event was not supplied")
		}
		if create.Type() != typeCreate || create.RoomID() != ev.RoomID() {
			return reject(ev, "room_id", "room ID %s does not name the create event %s", ev.RoomID(), create.EventID())
		}
		if isRejected(create.EventID()) {
			return reject(ev, "room_id", "the room's create event %s was rejected", create.EventID())
		}
	}
	listed := make(map[string]bool, len(ev.AuthEvents()))
	for _, id := range ev.AuthEvents() {
		if listed[id] {
			// v10 2.1 / v12 3.1: the same event twice is a duplicate pair.
			return reject(ev, "auth_events", "auth event %s is listed twice", id)
		}
		listed[id] = true
	}
	supplied := make(map[string]bool, len(authEvents))
	for _, ae := range authEvents {
		if ae == nil || !listed[ae.EventID()] {
			return reject(ev, "auth_events", "an auth event was supplied that the event does not list")
		}
		supplied[ae.EventID()] = true
	}
	for _, id := range ev.AuthEvents() {
		if !supplied[id] {
			return reject(ev, "auth_events", "auth event %s is missing", id)
		}
	}
	selection := AuthSelection(ev)
	selected := make(map[StateTuple]bool, len(selection))
	for _, t := range selection {
		selected[t] = true
	}
	state := make(map[StateTuple]*Event, len(authEvents)+1)
	// v10 2.1 / v12 3.1: no two entries for one (type, state_key).
	for _, ae := range authEvents {
		t, isState := StateTupleOf(ae)
		if !isState {
			// A non-state event matches no selected pair (v10 2.2 / v12 3.2).
			return reject(ev, "auth_events", "auth event %s is not a state event", ae.EventID())
		}
		if state[t] != nil {
			return reject(ev, "auth_events", "two auth events for (%s, %q)", t.Type, t.StateKey)
		}
		state[t] = ae
	}
	// v10 2.2 / v12 3.2: every entry must be one the selection picks; in
	// v12 the create event is never picked.
	for _, ae := range authEvents {
		t, _ := StateTupleOf(ae)
		if !selected[t] {
			if t == CreateTuple {
				return reject(ev, "auth_events", "the create event must not be listed in room version %s", v.ID)
			}
			return reject(ev, "auth_events", "auth event %s (%s, %q) is not one the auth events selection picks", ae.EventID(), t.Type, t.StateKey)
		}
	}
	// v10 2.3 / v12 3.3: no rejected entries.
	for _, ae := range authEvents {
		if isRejected(ae.EventID()) {
			return reject(ev, "auth_events", "auth event %s was rejected", ae.EventID())
		}
	}
	if v.CreateInAuthEvents {
		// v10 2.4: the create event must be among them.
		listedCreate := state[CreateTuple]
		if listedCreate == nil {
			return reject(ev, "auth_events", "no m.room.create event among the auth events")
		}
		if create != nil && create.EventID() != listedCreate.EventID() {
			return reject(ev, "auth_events", "the listed create event %s is not the room's (%s)", listedCreate.EventID(), create.EventID())
		}
	} else {
		state[CreateTuple] = create
	}
	// v10 2.5 / v12 3.5: every entry is from this room.
	for _, ae := range authEvents {
		if ae.RoomID() != ev.RoomID() {
			return reject(ev, "auth_events", "auth event %s belongs to room %s, not %s", ae.EventID(), ae.RoomID(), ev.RoomID())
		}
	}
	return checkAuth(ev, state)
}

// RedactionAllowed reports whether redaction, an accepted m.room.redaction
// event, may be applied to target ("Handling redactions", room versions 3
// and later): both must be in the same room and redaction must name
// target, and then either the redaction's sender has at least the redact
// level in state (the state to judge by, holding the room's create event),
// or the redaction's sender is on the same server as the target's sender.
// The auth rules never look at the redact level; this is the later check.
func RedactionAllowed(redaction, target *Event, state map[StateTuple]*Event) bool {
	if redaction == nil || target == nil {
		return false
	}
	if redaction.Type() != typeRedaction || redaction.Redacts() != target.EventID() || redaction.RoomID() != target.RoomID() {
		return false
	}
	if redaction.SenderServer() == target.SenderServer() {
		return true
	}
	pl, err := levelsOf(state[CreateTuple], state[StateTuple{typePowerLevels, ""}])
	if err != nil {
		return false
	}
	return !pl.user(redaction.Sender()).less(finite(pl.redact()))
}

// idProblem returns the grammar rule an identifier parse error names.
func idProblem(err error) string {
	var idErr *IDError
	if errors.As(err, &idErr) {
		return idErr.Reason
	}
	return err.Error()
}
