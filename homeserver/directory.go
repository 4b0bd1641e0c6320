package homeserver

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-matrix/ferry/store"
)

// Profile returns the profile of a local user for /query/profile: every
// field, or only field when it is not empty. Unknown users and fields are
// not-found errors.
func (e *Engine) Profile(ctx context.Context, userID, field string) (map[string]any, error) {
	u, err := e.Store.User(ctx, userID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("user %s does not exist", userID)
	}
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", userID, err)
	}
	profile := map[string]any{}
	if u.DisplayName != "" {
		profile["displayname"] = u.DisplayName
	}
	if u.AvatarURL != "" {
		profile["avatar_url"] = u.AvatarURL
	}
	switch field {
	case "":
		return profile, nil
	case "displayname", "avatar_url":
		v, ok := profile[field]
		if !ok {
			return nil, notFound("user %s has no %s", userID, field)
		}
		return map[string]any{field: v}, nil
	default:
		return nil, badRequest("unknown profile field %q", field)
	}
}

// ResolveAlias returns the room a local alias points to for
// /query/directory, with the servers to join through: ours first, then
// every server with a joined member, then any the alias was stored with.
func (e *Engine) ResolveAlias(ctx context.Context, alias string) (string, []string, error) {
	a, err := e.Store.Alias(ctx, alias)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil, notFound("alias %s does not exist", alias)
	}
	if err != nil {
		return "", nil, fmt.Errorf("resolve alias %s: %w", alias, err)
	}
	servers := []string{e.ServerName}
	joined, err := e.Store.JoinedServers(ctx, a.RoomID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", nil, fmt.Errorf("resolve alias %s: %w", alias, err)
	}
	for _, s := range append(joined, a.Servers...) {
		if !slices.Contains(servers, s) {
			servers = append(servers, s)
		}
	}
	return a.RoomID, servers, nil
}
