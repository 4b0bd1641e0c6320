package federation

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// ErrNotFound is returned by Directory implementations for users and
// aliases that do not exist; it answers 404 M_NOT_FOUND.
var ErrNotFound = errors.New("not found")

// Directory answers the query endpoints from what this server hosts. The
// homeserver engine implements it over the store.
type Directory interface {
	// Profile returns the profile of a local user (displayname,
	// avatar_url, ...), only field when it is not empty. Unknown users
	// are ErrNotFound.
	Profile(ctx context.Context, userID, field string) (map[string]any, error)
	// ResolveAlias returns the room a local alias points to and servers
	// that can be asked to join it. Unknown aliases are ErrNotFound.
	ResolveAlias(ctx context.Context, alias string) (roomID string, servers []string, err error)
}

// handleQueryProfile answers GET /_matrix/federation/v1/query/profile.
func (s *Server) handleQueryProfile(w http.ResponseWriter, r *http.Request, in *Incoming) error {
	q := r.URL.Query()
	userID := q.Get("user_id")
	if userID == "" {
		return Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "user_id is required")
	}
	server, err := serverOfID(userID, '@')
	if err != nil {
		return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "user_id: %v", err)
	}
	if server != s.ServerName {
		return Errorf(http.StatusNotFound, "M_NOT_FOUND", "user %s is not hosted on this server", userID)
	}
	field := q.Get("field")
	if s.Directory == nil {
		return Errorf(http.StatusNotFound, "M_NOT_FOUND", "user %s has no profile", userID)
	}
	profile, err := s.Directory.Profile(r.Context(), userID, field)
	if err != nil {
		return fmt.Errorf("profile of %s: %w", userID, err)
	}
	out := map[string]any{}
	for k, v := range profile {
		if field == "" || k == field {
			out[k] = v
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// handleQueryDirectory answers GET /_matrix/federation/v1/query/directory.
func (s *Server) handleQueryDirectory(w http.ResponseWriter, r *http.Request, in *Incoming) error {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		return Errorf(http.StatusBadRequest, "M_MISSING_PARAM", "room_alias is required")
	}
	server, err := serverOfID(alias, '#')
	if err != nil {
		return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "room_alias: %v", err)
	}
	if server != s.ServerName || s.Directory == nil {
		return Errorf(http.StatusNotFound, "M_NOT_FOUND", "room alias %s is not hosted on this server", alias)
	}
	roomID, servers, err := s.Directory.ResolveAlias(r.Context(), alias)
	if err != nil {
		return fmt.Errorf("room alias %s: %w", alias, err)
	}
	if servers == nil {
		servers = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": servers})
	return nil
}
