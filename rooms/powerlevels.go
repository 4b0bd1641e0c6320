package rooms

import (
	"fmt"
	"math"
	"strconv"
)

// Default levels of the m.room.power_levels event schema (client-server
// API, "m.room.power_levels"): they apply to a key the event leaves out and
// to every key when the room has no power-levels event at all. The
// server-server API's definitions say invite defaults to 50, but the event
// schema, which every deployed server follows, says 0 "in either case".
const (
	DefaultBanLevel           = 50
	DefaultKickLevel          = 50
	DefaultRedactLevel        = 50
	DefaultInviteLevel        = 0
	DefaultStateDefaultLevel  = 50
	DefaultEventsDefaultLevel = 0
	DefaultUsersDefaultLevel  = 0
	// CreatorLevelWithoutPowerLevels is the creator's level in a room with
	// no power-levels event, where creators are not privileged (room
	// version 10: the user named by the create event's content.creator).
	CreatorLevelWithoutPowerLevels = 100
)

// powerLevelIntegerKeys are the top-level integer properties of a
// power-levels event, in the order the auth rules list them.
var powerLevelIntegerKeys = []string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}

// PowerLevels is the parsed content of a room's m.room.power_levels event
// with every default filled in, plus the room's creators. The zero value is
// not useful; use PowerLevelsFrom.
type PowerLevels struct {
	Ban, Kick, Redact, Invite   int64
	StateDefault, EventsDefault int64
	UsersDefault                int64
	Events                      map[string]int64 // per event type
	Notifications               map[string]int64 // per notification key
	Users                       map[string]int64 // per user ID
	// Creators holds the users with infinite power: the create event's
	// sender and content.additional_creators where the room version makes
	// creators privileged (Version.Creators == CreatorSenderPrivileged),
	// otherwise nobody.
	Creators map[string]bool
	// Exists reports whether the room has an m.room.power_levels event.
	Exists bool
}

// PowerLevelsFrom reads the power levels of the room whose state is given:
// the m.room.power_levels event at ("m.room.power_levels", "") with schema
// defaults, or the defaults of a room without one (where, in room version
// 10, the creator named by the create event has level 100). Creators of a
// room version with privileged creators (12) get infinite power in either
// case. The error reports a power-levels event whose values are not
// integers or whose users keys are not user IDs; such an event cannot have
// passed the auth rules of versions with Version.IntegerPowerLevels.
func PowerLevelsFrom(state map[StateTuple]*Event) (PowerLevels, error) {
	create := state[CreateTuple]
	plEvent := state[StateTuple{typePowerLevels, ""}]
	return powerLevelsOf(create, plEvent)
}

func powerLevelsOf(create, plEvent *Event) (PowerLevels, error) {
	pl := PowerLevels{
		Ban:           DefaultBanLevel,
		Kick:          DefaultKickLevel,
		Redact:        DefaultRedactLevel,
		Invite:        DefaultInviteLevel,
		StateDefault:  DefaultStateDefaultLevel,
		EventsDefault: DefaultEventsDefaultLevel,
		UsersDefault:  DefaultUsersDefaultLevel,
		Events:        map[string]int64{},
		Notifications: map[string]int64{},
		Users:         map[string]int64{},
		Creators:      map[string]bool{},
	}
	if create != nil {
		privileged, err := privilegedCreators(create)
		if err != nil {
			return pl, err
		}
		for _, c := range privileged {
			pl.Creators[c] = true
		}
	}
	if plEvent == nil {
		// No power-levels event: the creator has 100, everyone else
		// users_default (m.room.power_levels schema); privileged
		// creators are above that anyway.
		if create != nil && create.Version().Creators == CreatorFromContent {
			if c, ok := create.Content()["creator"].(string); ok {
				pl.Users[c] = CreatorLevelWithoutPowerLevels
			}
		}
		return pl, nil
	}
	if !plEvent.Version().IntegerPowerLevels {
		return pl, fmt.Errorf("power levels: room version %s allows string levels, which Ferry does not implement", plEvent.Version().ID)
	}
	content := plEvent.Content()
	if reason := checkPowerLevelsContent(content); reason != "" {
		return pl, fmt.Errorf("power levels event %s: %s", plEvent.EventID(), reason)
	}
	pl.Exists = true
	fields := map[string]*int64{
		"users_default": &pl.UsersDefault, "events_default": &pl.EventsDefault,
		"state_default": &pl.StateDefault, "ban": &pl.Ban, "redact": &pl.Redact,
		"kick": &pl.Kick, "invite": &pl.Invite,
	}
	for key, dst := range fields {
		if n, ok := content[key].(int64); ok {
			*dst = n
		}
	}
	copyLevels := func(dst map[string]int64, src any) {
		m, _ := src.(map[string]any)
		for k, val := range m {
			if n, ok := val.(int64); ok {
				dst[k] = n
			}
		}
	}
	copyLevels(pl.Events, content["events"])
	copyLevels(pl.Notifications, content["notifications"])
	copyLevels(pl.Users, content["users"])
	return pl, nil
}

// checkPowerLevelsContent applies the shape rules of the power-levels
// auth rules (v10 9.1-9.3, v12 10.1-10.3) and returns a stable sentence
// naming the first violation, or "" if the content is well formed.
func checkPowerLevelsContent(content map[string]any) string {
	for _, key := range powerLevelIntegerKeys {
		if val, present := content[key]; present {
			if _, ok := val.(int64); !ok {
				return fmt.Sprintf("%s is not an integer", key)
			}
		}
	}
	for _, key := range []string{"events", "notifications"} {
		val, present := content[key]
		if !present {
			continue
		}
		m, ok := val.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s is not an object", key)
		}
		for _, k := range sortedKeys(m) {
			if _, ok := m[k].(int64); !ok {
				return fmt.Sprintf("%s[%q] is not an integer", key, k)
			}
		}
	}
	// An absent users property is treated like an empty one, as for the
	// other properties ("present and not ...").
	if val, present := content["users"]; present {
		m, ok := val.(map[string]any)
		if !ok {
			return "users is not an object"
		}
		for _, k := range sortedKeys(m) {
			if _, err := ParseUserID(k); err != nil {
				return fmt.Sprintf("users key %q is not a valid user ID (%s)", k, idProblem(err))
			}
			if _, ok := m[k].(int64); !ok {
				return fmt.Sprintf("users[%q] is not an integer", k)
			}
		}
	}
	return ""
}

// privilegedCreators returns the creators with infinite power: for
// CreatorSenderPrivileged the create event's sender and every string of
// content.additional_creators, for CreatorFromContent nobody.
func privilegedCreators(create *Event) ([]string, error) {
	switch create.Version().Creators {
	case CreatorFromContent:
		return nil, nil
	case CreatorSenderPrivileged:
		out := []string{create.Sender()}
		if extra, ok := create.Content()["additional_creators"].([]any); ok {
			for _, e := range extra {
				if s, ok := e.(string); ok {
					out = append(out, s)
				}
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("room version %s: unknown creator model %d", create.Version().ID, create.Version().Creators)
	}
}

// joinCreator returns the user whose join may directly follow the create
// event (v10 rule 4.3.1: content.creator; v12 rule 5.3.1: the create
// event's sender).
func joinCreator(create *Event) (string, bool) {
	switch create.Version().Creators {
	case CreatorFromContent:
		s, ok := create.Content()["creator"].(string)
		return s, ok
	case CreatorSenderPrivileged:
		return create.Sender(), true
	default:
		return "", false
	}
}

// UserLevel returns userID's power level. For a creator with infinite
// power it returns (math.MaxInt64, true): levels are bounded by canonical
// JSON to ±(2^53-1), so the returned number is above every real level, but
// callers should test infinite rather than rely on that.
func (pl PowerLevels) UserLevel(userID string) (level int64, infinite bool) {
	if pl.Creators[userID] {
		return math.MaxInt64, true
	}
	if n, ok := pl.Users[userID]; ok {
		return n, false
	}
	return pl.UsersDefault, false
}

// EventLevel returns the required power level for sending an event of type
// typ: events[typ], else state_default for state events and
// events_default for others.
func (pl PowerLevels) EventLevel(typ string, isState bool) int64 {
	if n, ok := pl.Events[typ]; ok {
		return n
	}
	if isState {
		return pl.StateDefault
	}
	return pl.EventsDefault
}

// IsCreator reports whether userID has a creator's infinite power.
func (pl PowerLevels) IsCreator(userID string) bool { return pl.Creators[userID] }

// power is a power level that may be infinite (a creator in room version
// 12): infinity is above every integer and not below itself.
type power struct {
	n        int64
	infinite bool
}

func (pl PowerLevels) userPower(userID string) power {
	n, inf := pl.UserLevel(userID)
	return power{n: n, infinite: inf}
}

func finite(n int64) power { return power{n: n} }

func (a power) less(b power) bool {
	switch {
	case a.infinite:
		return false
	case b.infinite:
		return true
	default:
		return a.n < b.n
	}
}

func (a power) String() string {
	if a.infinite {
		return "infinite (creator)"
	}
	return strconv.FormatInt(a.n, 10)
}

// InitialPowerLevelsContent returns the content of the first power-levels
// event of a new room of version v created by creator: the schema defaults
// written out, the creator at 100 where creators are not privileged (in
// version 12 creators must not be listed in users), and the usual
// administrative event levels. Where v.TombstoneAboveStateDefault, the
// m.room.tombstone level is 150, above state_default and every admin, so
// only creators can upgrade the room.
func InitialPowerLevelsContent(v Version, creator string) map[string]any {
	tombstone := int64(100)
	if v.TombstoneAboveStateDefault {
		tombstone = 150
	}
	users := map[string]any{}
	if v.Creators != CreatorSenderPrivileged {
		users[creator] = int64(100)
	}
	return map[string]any{
		"ban":            int64(DefaultBanLevel),
		"kick":           int64(DefaultKickLevel),
		"redact":         int64(DefaultRedactLevel),
		"invite":         int64(DefaultInviteLevel),
		"state_default":  int64(DefaultStateDefaultLevel),
		"events_default": int64(DefaultEventsDefaultLevel),
		"users_default":  int64(DefaultUsersDefaultLevel),
		"users":          users,
		"events": map[string]any{
			"m.room.name":               int64(50),
			"m.room.avatar":             int64(50),
			"m.room.topic":              int64(50),
			"m.room.canonical_alias":    int64(50),
			"m.room.power_levels":       int64(100),
			"m.room.history_visibility": int64(100),
			"m.room.encryption":         int64(100),
			"m.room.server_acl":         int64(100),
			typeTombstone:               tombstone,
		},
		"notifications": map[string]any{"room": int64(50)},
	}
}

// levels reads power levels straight from the content of the room's
// power-levels event, without copying its users map: the auth rules need a
// handful of lookups per event, and a large room's users map may hold
// thousands of entries. A value that is not an integer counts as absent
// (falls back to its default); such an event cannot have passed the rules
// of a version with Version.IntegerPowerLevels.
type levels struct {
	content map[string]any // nil when the room has no power-levels event
	users   map[string]any
	events  map[string]any
	// creatorsFrom is the create event whose sender and
	// additional_creators have infinite power (nil where creators are not
	// privileged).
	creatorsFrom *Event
	// noPLCreator has level 100 when there is no power-levels event and
	// creators are not privileged (room version 10's content.creator).
	noPLCreator string
}

func levelsOf(create, plEvent *Event) (levels, error) {
	var l levels
	if create != nil {
		switch create.Version().Creators {
		case CreatorFromContent:
		case CreatorSenderPrivileged:
			l.creatorsFrom = create
		default:
			return l, fmt.Errorf("room version %s: unknown creator model %d", create.Version().ID, create.Version().Creators)
		}
	}
	if plEvent == nil {
		if create != nil && create.Version().Creators == CreatorFromContent {
			l.noPLCreator, _ = create.Content()["creator"].(string)
		}
		return l, nil
	}
	if !plEvent.Version().IntegerPowerLevels {
		return l, fmt.Errorf("power levels: room version %s allows string levels, which Ferry does not implement", plEvent.Version().ID)
	}
	l.content = plEvent.Content()
	l.users, _ = l.content["users"].(map[string]any)
	l.events, _ = l.content["events"].(map[string]any)
	return l, nil
}

// named returns the top-level level key ("ban", "invite", ...) or def.
func (l levels) named(key string, def int64) int64 {
	if n, ok := l.content[key].(int64); ok {
		return n
	}
	return def
}

func (l levels) ban() int64    { return l.named("ban", DefaultBanLevel) }
func (l levels) kick() int64   { return l.named("kick", DefaultKickLevel) }
func (l levels) invite() int64 { return l.named("invite", DefaultInviteLevel) }
func (l levels) redact() int64 { return l.named("redact", DefaultRedactLevel) }

// eventLevel is the required power level for an event type.
func (l levels) eventLevel(typ string, isState bool) int64 {
	if n, ok := l.events[typ].(int64); ok {
		return n
	}
	if isState {
		return l.named("state_default", DefaultStateDefaultLevel)
	}
	return l.named("events_default", DefaultEventsDefaultLevel)
}

// user is userID's power, infinite for a privileged creator.
func (l levels) user(userID string) power {
	if l.isCreator(userID) {
		return power{n: math.MaxInt64, infinite: true}
	}
	if l.content == nil {
		if l.noPLCreator != "" && userID == l.noPLCreator {
			return finite(CreatorLevelWithoutPowerLevels)
		}
		return finite(DefaultUsersDefaultLevel)
	}
	if n, ok := l.users[userID].(int64); ok {
		return finite(n)
	}
	return finite(l.named("users_default", DefaultUsersDefaultLevel))
}

// isCreator reports whether userID is a privileged creator: the create
// event's sender or one of the strings in content.additional_creators.
func (l levels) isCreator(userID string) bool {
	if l.creatorsFrom == nil {
		return false
	}
	if userID == l.creatorsFrom.Sender() {
		return true
	}
	extra, _ := l.creatorsFrom.Content()["additional_creators"].([]any)
	for _, e := range extra {
		if s, ok := e.(string); ok && s == userID {
			return true
		}
	}
	return false
}
