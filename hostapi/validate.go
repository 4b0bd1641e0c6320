package hostapi

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/ferry-matrix/ferry/rooms"
)

// Checks of request values, made before the host is called so that bad
// input never reaches the engine or the store. Each returns an *Error
// naming the field.

// localUser checks that s is a user ID of this server. Without a
// configured server name only the grammar is checked and the host
// refuses users of other servers itself.
func (s *Server) localUser(field, v string) error {
	id, err := rooms.ParseUserID(v)
	if err != nil {
		return invalidParam("%s: %v", field, err)
	}
	if s.serverName != "" && string(id.Server()) != s.serverName {
		return invalidParam("%s: %s is not a user of this server (%s)", field, v, s.serverName)
	}
	return nil
}

// anyUser checks that s is a user ID of any server.
func anyUser(field, v string) error {
	if _, err := rooms.ParseUserID(v); err != nil {
		return invalidParam("%s: %v", field, err)
	}
	return nil
}

// anyUsers checks a list of user IDs of any server.
func anyUsers(field string, vs []string) error {
	for _, v := range vs {
		if err := anyUser(field, v); err != nil {
			return err
		}
	}
	return nil
}

func roomID(field, v string) error {
	if _, err := rooms.ParseRoomID(v); err != nil {
		return invalidParam("%s: %v", field, err)
	}
	return nil
}

func eventID(field, v string) error {
	if _, err := rooms.ParseEventID(v); err != nil {
		return invalidParam("%s: %v", field, err)
	}
	return nil
}

// roomAlias checks an alias of any server.
func roomAlias(field, v string) error {
	if _, err := rooms.ParseRoomAlias(v); err != nil {
		return invalidParam("%s: %v", field, err)
	}
	return nil
}

// localAlias checks an alias this server may define.
func (s *Server) localAlias(field, v string) error {
	alias, err := rooms.ParseRoomAlias(v)
	if err != nil {
		return invalidParam("%s: %v", field, err)
	}
	if s.serverName != "" && string(alias.Server()) != s.serverName {
		return invalidParam("%s: %s is not an alias of this server (%s)", field, v, s.serverName)
	}
	return nil
}

// roomIDOrAlias checks a room ID ('!') or alias ('#').
func roomIDOrAlias(field, v string) error {
	if strings.HasPrefix(v, "#") {
		return roomAlias(field, v)
	}
	return roomID(field, v)
}

// serverNames checks the via list of a join or knock.
func serverNames(field string, vs []string) error {
	for _, v := range vs {
		if _, err := rooms.ParseServerName(v); err != nil {
			return invalidParam("%s: %v", field, err)
		}
	}
	return nil
}

// eventType checks the type of an event to send: any non-empty string.
func eventType(field, v string) error {
	if v == "" {
		return invalidParam("%s: an event type must not be empty", field)
	}
	return nil
}

// roomVersion checks a requested room version ("" = the default).
func roomVersion(v string) error {
	if v == "" {
		return nil
	}
	if _, err := rooms.LookupVersion(v); err != nil {
		return errorf(http.StatusBadRequest, codeUnsupportedVersion, "room_version: %v", err)
	}
	return nil
}

// intParam reads an optional integer query parameter in [lo, hi],
// returning def when it is absent.
func intParam(values map[string][]string, name string, def, lo, hi int64) (int64, error) {
	raw, ok := values[name]
	if !ok || len(raw) == 0 || raw[0] == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(raw[0], 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, invalidParam("%s must be an integer from %d to %d, not %q", name, lo, hi, raw[0])
	}
	return n, nil
}

// streamToken parses a position token of the event stream.
func streamToken(name, v string) (int64, error) {
	pos, err := strconv.ParseInt(v, 10, 64)
	if err != nil || pos < 0 {
		return 0, invalidParam("%s: %q is not a stream token (a position returned as next or pos)", name, v)
	}
	return pos, nil
}

// firstError returns the first non-nil error, so handlers can list
// their checks in order.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
