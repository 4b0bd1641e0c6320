package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// hostAPI calls Ferry's host API (/_ferry/v1, plain HTTP JSON with a
// bearer token): only to set a room up on a Ferry target or to start its
// join, never for what is measured over federation.
type hostAPI struct {
	base  string // e.g. http://127.0.0.1:8008
	token string
	hc    *http.Client
}

func newHostAPI(base, token string) *hostAPI {
	return &hostAPI{base: strings.TrimRight(base, "/"), token: token, hc: &http.Client{Timeout: 30 * time.Minute}}
}

// call sends body as JSON and decodes a 2xx answer into out (may be nil).
func (h *hostAPI) call(ctx context.Context, method, path string, body, out any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+"/_ferry/v1"+path, bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("host API %s %s: %w", method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+h.token)
	resp, err := h.hc.Do(req)
	if err != nil {
		return fmt.Errorf("host API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("host API %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("host API %s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(answer))
	}
	if out != nil {
		if err := json.Unmarshal(answer, out); err != nil {
			return fmt.Errorf("host API %s %s: answer: %w", method, path, err)
		}
	}
	return nil
}

// putUser registers a local user of the target (PUT /users/{userId}).
func (h *hostAPI) putUser(ctx context.Context, userID string) error {
	return h.call(ctx, http.MethodPut, "/users/"+url.PathEscape(userID), map[string]any{"displayname": "ferry-load"}, nil)
}

// createPublicRoom creates a public room with creator (POST /rooms).
func (h *hostAPI) createPublicRoom(ctx context.Context, creator, version string) (string, error) {
	var out struct {
		RoomID string `json:"room_id"`
	}
	body := map[string]any{"creator": creator, "preset": "public_chat", "name": "ferry-load"}
	if version != "" {
		body["room_version"] = version
	}
	if err := h.call(ctx, http.MethodPost, "/rooms", body, &out); err != nil {
		return "", err
	}
	return out.RoomID, nil
}

// join asks the target to join userID to roomID through via (POST
// /rooms/{roomId}/join) and returns the join's event ID.
func (h *hostAPI) join(ctx context.Context, roomID, userID string, via []string) (string, error) {
	var out struct {
		EventID string `json:"event_id"`
	}
	err := h.call(ctx, http.MethodPost, "/rooms/"+url.PathEscape(roomID)+"/join", map[string]any{"user_id": userID, "via": via}, &out)
	return out.EventID, err
}
