package homeserver

import (
	"time"

	"github.com/ferry-matrix/ferry/rooms"
)

// isLocal reports whether userID is one of our users.
func (e *Engine) isLocal(userID string) bool {
	u, err := rooms.ParseUserID(userID)
	return err == nil && string(u.Server()) == e.ServerName
}

// resolveState is rooms.ResolveState, timed for metrics.
func (e *Engine) resolveState(v rooms.Version, states []rooms.StateMap, src rooms.EventSource, cache *rooms.AuthChainCache) (rooms.StateMap, error) {
	if e.ObserveStateResolution == nil {
		return rooms.ResolveState(v, states, src, cache)
	}
	start := time.Now()
	defer func() { e.ObserveStateResolution(time.Since(start)) }()
	return rooms.ResolveState(v, states, src, cache)
}
