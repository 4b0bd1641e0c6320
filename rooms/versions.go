package rooms

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// RedactionRules names a redaction algorithm (which keys survive).
type RedactionRules int

const (
	// RedactionV9 keeps the top-level origin, membership and prev_state keys
	// (room versions 9 and 10).
	RedactionV9 RedactionRules = iota + 1
	// RedactionV11 drops origin, membership and prev_state, keeps all of
	// the create event's content, the redaction's redacts, power levels'
	// invite and a member's third_party_invite.signed (room versions 11+).
	RedactionV11
)

// RoomIDScheme says how a room ID is formed.
type RoomIDScheme int

const (
	// RoomIDOpaque is "!opaque:server", chosen by the creating server.
	RoomIDOpaque RoomIDScheme = iota + 1
	// RoomIDFromCreate is "!" plus the create event's reference hash
	// (URL-safe base64), with no server part (room version 12).
	RoomIDFromCreate
)

// StateResAlgorithm names a state resolution algorithm.
type StateResAlgorithm int

const (
	// StateResV2 is state resolution v2 (room versions 2 to 11).
	StateResV2 StateResAlgorithm = iota + 1
	// StateResV21 is state resolution v2.1 (MSC4297, room version 12):
	// resolution starts from the empty state and the conflicted set is
	// widened to the conflicted state subgraph.
	StateResV21
)

// CreatorModel says who the room's creators are and what power they hold.
type CreatorModel int

const (
	// CreatorFromContent: the creator is content.creator of the create
	// event; with no power-levels event it holds level 100 (room version 10).
	CreatorFromContent CreatorModel = iota + 1
	// CreatorSenderPrivileged: the creators are the create event's sender
	// plus content.additional_creators; they hold infinite power and may not
	// be listed in power levels' users (room version 12).
	CreatorSenderPrivileged
)

// Version describes one room version. Every behaviour that differs between
// versions is a field here; code asks the table instead of comparing
// version strings. Values are immutable: LookupVersion hands out copies.
type Version struct {
	// ID is the version string used on the wire ("10", "12").
	ID string
	// Stable is the spec's stability flag; every version Ferry speaks is stable.
	Stable bool
	// Label is Ferry's display label: "LTS" for the long-term-stable version.
	Label string
	// IETFName is the MIMI framework's name for the version ("I.1"), shown
	// in docs and CLI output only, never sent on the wire.
	IETFName string

	Redaction RedactionRules
	RoomIDs   RoomIDScheme
	StateRes  StateResAlgorithm
	Creators  CreatorModel

	// CreateHasCreator: m.room.create content must carry "creator".
	CreateHasCreator bool
	// CreateInAuthEvents: non-create events list the create event in
	// auth_events (true for 10); when false the create event is implied by
	// the room ID and must not be listed (12).
	CreateInAuthEvents bool
	// IntegerPowerLevels: power-level values must be JSON integers, not
	// strings (room versions 10+).
	IntegerPowerLevels bool
	// Knocking: the "knock" join rule and membership exist (7+).
	Knocking bool
	// RestrictedJoins: the "restricted" join rule exists (8+).
	RestrictedJoins bool
	// KnockRestricted: the "knock_restricted" join rule exists (10+).
	KnockRestricted bool
	// TombstoneAboveStateDefault: new rooms must give m.room.tombstone a
	// level above state_default so only creators can upgrade (12).
	TombstoneAboveStateDefault bool
	// RedactsInContent: m.room.redaction names its target in
	// content.redacts (11+) rather than in the top-level redacts key.
	RedactsInContent bool
}

// String returns the version's wire ID with its label, e.g. "10 (LTS, I.1)".
func (v Version) String() string {
	switch {
	case v.Label != "" && v.IETFName != "":
		return fmt.Sprintf("%s (%s, %s)", v.ID, v.Label, v.IETFName)
	case v.Label != "":
		return fmt.Sprintf("%s (%s)", v.ID, v.Label)
	default:
		return v.ID
	}
}

// version10 is the long-term-stable version (MIMI framework "I.1").
var version10 = Version{
	ID:                 "10",
	Stable:             true,
	Label:              "LTS",
	IETFName:           "I.1",
	Redaction:          RedactionV9,
	RoomIDs:            RoomIDOpaque,
	StateRes:           StateResV2,
	Creators:           CreatorFromContent,
	CreateHasCreator:   true,
	CreateInAuthEvents: true,
	IntegerPowerLevels: true,
	Knocking:           true,
	RestrictedJoins:    true,
	KnockRestricted:    true,
}

// version12 is the current version: version 10 plus the changes of room
// version 11 (MSC2174, MSC2175, MSC3989, MSC2176, MSC3821) and 12 (MSC4289,
// MSC4291, MSC4297).
var version12 = func() Version {
	v := version10
	v.ID = "12"
	v.Label = "current"
	v.IETFName = ""
	v.Redaction = RedactionV11
	v.RoomIDs = RoomIDFromCreate
	v.StateRes = StateResV21
	v.Creators = CreatorSenderPrivileged
	v.CreateHasCreator = false
	v.CreateInAuthEvents = false
	v.TombstoneAboveStateDefault = true
	v.RedactsInContent = true
	return v
}()

var versionTable = map[string]Version{
	version10.ID: version10,
	version12.ID: version12,
}

// ErrUnsupportedVersion is matched by errors for room versions Ferry does
// not implement.
var ErrUnsupportedVersion = errors.New("unsupported room version")

// UnsupportedVersionError names the room version that was asked for.
type UnsupportedVersionError struct {
	Version string
}

func (e *UnsupportedVersionError) Error() string {
	supported := strings.Join(SupportedVersionIDs(), ", ")
	for _, v := range versionTable {
		if v.IETFName != "" && v.IETFName == e.Version {
			return fmt.Sprintf("unsupported room version %q: that is the IETF name of room version %s, which is what the wire uses (Ferry supports %s)", e.Version, v.ID, supported)
		}
	}
	if !ValidVersionID(e.Version) {
		return fmt.Sprintf("invalid room version %q: a room version is 1 to 32 characters of a-z, 0-9, '.' and '-' (Ferry supports %s)", e.Version, supported)
	}
	return fmt.Sprintf("unsupported room version %q (Ferry supports %s)", e.Version, supported)
}

// ValidVersionID reports whether id follows the room version grammar:
// 1 to 32 characters of a-z, 0-9, '.' and '-'.
func ValidVersionID(id string) bool {
	if id == "" || len(id) > 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// Unwrap lets callers match ErrUnsupportedVersion.
func (e *UnsupportedVersionError) Unwrap() error { return ErrUnsupportedVersion }

// LookupVersion returns the description of room version id.
func LookupVersion(id string) (Version, error) {
	v, ok := versionTable[id]
	if !ok {
		return Version{}, &UnsupportedVersionError{Version: id}
	}
	return v, nil
}

// SupportedVersionIDs lists the versions Ferry implements, sorted; it is the
// "ver" list sent on make_join and make_knock.
func SupportedVersionIDs() []string {
	ids := make([]string, 0, len(versionTable))
	for id := range versionTable {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// SupportedVersions returns every implemented version, sorted by ID.
func SupportedVersions() []Version {
	ids := SupportedVersionIDs()
	out := make([]Version, len(ids))
	for i, id := range ids {
		out[i] = versionTable[id]
	}
	return out
}

// String names the rule set as the spec's room version pages do.
func (r RedactionRules) String() string {
	switch r {
	case RedactionV9:
		return "v9 (versions 9-10: keeps origin, membership, prev_state)"
	case RedactionV11:
		return "v11 (versions 11+: create keeps all content)"
	default:
		return fmt.Sprintf("RedactionRules(%d)", int(r))
	}
}

// String names the room ID scheme.
func (s RoomIDScheme) String() string {
	switch s {
	case RoomIDOpaque:
		return "!opaque:server"
	case RoomIDFromCreate:
		return "! + create event reference hash"
	default:
		return fmt.Sprintf("RoomIDScheme(%d)", int(s))
	}
}

// String names the state resolution algorithm.
func (a StateResAlgorithm) String() string {
	switch a {
	case StateResV2:
		return "v2"
	case StateResV21:
		return "v2.1"
	default:
		return fmt.Sprintf("StateResAlgorithm(%d)", int(a))
	}
}

// String names the creator model.
func (m CreatorModel) String() string {
	switch m {
	case CreatorFromContent:
		return "content.creator, level 100 by default"
	case CreatorSenderPrivileged:
		return "sender + additional_creators, infinite power"
	default:
		return fmt.Sprintf("CreatorModel(%d)", int(m))
	}
}

// stateResStandIns maps room versions Ferry does not implement to an
// implemented one whose state resolution gives the same result, once the
// create event names its creator: version 11 resolves with v2.0 exactly as
// version 10 does. Only offline tools use it, to run other implementations'
// version 11 test cases; the server never accepts these versions.
var stateResStandIns = map[string]string{"11": version10.ID}

// StateResStandIn returns the implemented version whose state resolution
// stands in for the unimplemented version id, if there is one. Events of id
// must be given a content.creator (the sender) before they are judged
// under the stand-in's rules.
func StateResStandIn(id string) (Version, bool) {
	standIn, ok := stateResStandIns[id]
	if !ok {
		return Version{}, false
	}
	return versionTable[standIn], true
}
