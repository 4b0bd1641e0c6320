package rooms

// Event types, memberships and join rules the authorization rules read.
const (
	typeCreate            = "m.room.create"
	typeMember            = "m.room.member"
	typeJoinRules         = "m.room.join_rules"
	typePowerLevels       = "m.room.power_levels"
	typeThirdPartyInvite  = "m.room.third_party_invite"
	typeRedaction         = "m.room.redaction"
	typeTombstone         = "m.room.tombstone"
	membershipJoin        = "join"
	membershipInvite      = "invite"
	membershipLeave       = "leave"
	membershipBan         = "ban"
	membershipKnock       = "knock"
	joinRulePublic        = "public"
	joinRuleInvite        = "invite"
	joinRuleKnock         = "knock"
	joinRuleRestricted    = "restricted"
	joinRuleKnockRestrict = "knock_restricted"
	joinRulePrivate       = "private"
)

// StateTuple identifies a piece of room state: an event type and a state
// key.
type StateTuple struct{ Type, StateKey string }

// CreateTuple is the state tuple of the room's m.room.create event.
var CreateTuple = StateTuple{typeCreate, ""}

// StateTupleOf returns the (type, state_key) pair of a state event and
// false for a non-state event.
func StateTupleOf(ev *Event) (StateTuple, bool) {
	sk, ok := ev.StateKey()
	if !ok {
		return StateTuple{}, false
	}
	return StateTuple{ev.Type(), sk}, true
}

// AuthSelection returns the (type, state_key) pairs ev's auth_events must be
// drawn from, per the server-server API's "Auth events selection", for ev's
// room version. Each pair is to be listed only if the room state holds an
// event for it. The create event's own selection is empty. The result has no
// duplicates and a fixed order:
//
//   - the m.room.create event, only when Version.CreateInAuthEvents (room
//     version 12 implies it through the room ID and forbids listing it);
//   - the m.room.power_levels event;
//   - the sender's m.room.member event;
//   - for m.room.member events: the target's m.room.member event; the
//     m.room.join_rules event if membership is join, invite or knock (knock
//     only where the version has knocking, as the knock rule reads the join
//     rule); for an invite whose content.third_party_invite.signed.token is a
//     string, the m.room.third_party_invite event with that state key; and,
//     where the version has restricted joins, the m.room.member event of the
//     user named by content.join_authorised_via_users_server.
func AuthSelection(ev *Event) []StateTuple {
	return selectAuth(ev.Version(), ev.Type(), ev.StateKeyPtr(), ev.Sender(), ev.Content())
}

// AuthSelectionFor is AuthSelection for an event not built yet: a local
// event's auth_events are chosen from the room state before it is built
// and signed.
func AuthSelectionFor(v Version, t EventTemplate) []StateTuple {
	return selectAuth(v, t.Type, t.StateKey, t.Sender, t.Content)
}

func selectAuth(v Version, typ string, stateKey *string, sender string, content map[string]any) []StateTuple {
	if typ == typeCreate {
		return nil
	}
	out := make([]StateTuple, 0, 7)
	add := func(t StateTuple) {
		for _, have := range out {
			if have == t {
				return
			}
		}
		out = append(out, t)
	}
	if v.CreateInAuthEvents {
		add(CreateTuple)
	}
	add(StateTuple{typePowerLevels, ""})
	add(StateTuple{typeMember, sender})
	if typ != typeMember {
		return out
	}
	if stateKey != nil {
		add(StateTuple{typeMember, *stateKey})
	}
	membership, _ := content["membership"].(string)
	switch {
	case membership == membershipJoin, membership == membershipInvite,
		membership == membershipKnock && v.Knocking:
		add(StateTuple{typeJoinRules, ""})
	}
	if membership == membershipInvite {
		if token, ok := thirdPartyInviteToken(content); ok {
			add(StateTuple{typeThirdPartyInvite, token})
		}
	}
	if v.RestrictedJoins {
		if via, ok := content["join_authorised_via_users_server"].(string); ok {
			add(StateTuple{typeMember, via})
		}
	}
	return out
}

// thirdPartyInviteToken returns content.third_party_invite.signed.token.
func thirdPartyInviteToken(content map[string]any) (string, bool) {
	tpi, _ := content["third_party_invite"].(map[string]any)
	signed, _ := tpi["signed"].(map[string]any)
	token, ok := signed["token"].(string)
	return token, ok
}
