package homeserver

import (
	"context"
	"errors"
	"net/netip"
	"strings"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// aclTuple is the state key of a room's server ACL.
var aclTuple = store.StateKey{Type: "m.room.server_acl", StateKey: ""}

// serverAllowed applies the room's current m.room.server_acl to server.
func (e *Engine) serverAllowed(ctx context.Context, roomID, server string) (bool, error) {
	id, err := e.Store.CurrentStateEvent(ctx, roomID, aclTuple)
	if errors.Is(err, store.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	se, err := e.storedEvent(ctx, id)
	if err != nil {
		return false, err
	}
	return ACLAllows(se.Event.Content(), server), nil
}

// ACLAllows applies the content of an m.room.server_acl event to a server
// name (spec, "Server Access Control Lists"): the port is ignored; an IP
// literal is denied when allow_ip_literals is false; a server matching a
// deny glob is denied; one matching an allow glob is allowed; anything
// else is denied. Globs match case-insensitively with * and ?. Entries
// that are not strings are ignored.
func ACLAllows(content map[string]any, server string) bool {
	host := hostOf(server)
	if allowIP, ok := content["allow_ip_literals"].(bool); ok && !allowIP && isIPLiteral(host) {
		return false
	}
	for _, g := range stringList(content["deny"]) {
		if globMatch(strings.ToLower(g), strings.ToLower(host)) {
			return false
		}
	}
	for _, g := range stringList(content["allow"]) {
		if globMatch(strings.ToLower(g), strings.ToLower(host)) {
			return true
		}
	}
	return false
}

func stringList(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, item := range list {
		if s, ok := item.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// hostOf returns a server name without its port.
func hostOf(server string) string {
	if name, err := rooms.ParseServerName(server); err == nil {
		return name.Host()
	}
	if i := strings.LastIndexByte(server, ':'); i >= 0 && !strings.Contains(server[:i], ":") {
		return server[:i]
	}
	return server
}

func isIPLiteral(host string) bool {
	h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	_, err := netip.ParseAddr(h)
	return err == nil
}

// globMatch matches s against pattern, where * is any run of characters
// and ? one character. It runs in O(len(pattern)·len(s)) at worst.
func globMatch(pattern, s string) bool {
	p, n := []rune(pattern), []rune(s)
	pi, ni := 0, 0
	star, mark := -1, 0
	for ni < len(n) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == n[ni]):
			pi++
			ni++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ni
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			ni = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
