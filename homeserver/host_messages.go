package homeserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ferry-matrix/ferry/store"
)

// Messages pages through a room's timeline: events accepted here (not
// outliers, soft-failed or rejected) in topological order. from is a
// token of an earlier page ("" starts at the newest event going
// backwards, at the oldest going forwards); end is the token of the next
// page, "" when there is no more.
func (h *Host) Messages(ctx context.Context, roomID, from string, backwards bool, limit int) ([]json.RawMessage, string, error) {
	if limit < 1 || limit > MaxMessagesLimit {
		return nil, "", badRequest("limit must be between 1 and %d", MaxMessagesLimit)
	}
	if err := h.knownRoom(ctx, roomID); err != nil {
		return nil, "", err
	}
	var start *store.TimelinePos
	if from != "" {
		pos, err := parseTimelineToken(from)
		if err != nil {
			return nil, "", err
		}
		start = &pos
	}
	page, err := h.store().Timeline(ctx, roomID, start, backwards, limit)
	if err != nil {
		return nil, "", fmt.Errorf("messages: %w", err)
	}
	chunk := make([]json.RawMessage, 0, len(page))
	for _, te := range page {
		raw, err := EventJSON(te.Event.Event)
		if err != nil {
			return nil, "", fmt.Errorf("messages: %w", err)
		}
		chunk = append(chunk, raw)
	}
	end := ""
	if len(page) == limit {
		end = timelineToken(page[len(page)-1].Pos)
	}
	return chunk, end, nil
}

// timelineToken is the opaque token of a timeline place.
func timelineToken(p store.TimelinePos) string {
	return "t" + strconv.FormatInt(p.Depth, 10) + "_" + strconv.FormatInt(p.NID, 10)
}

// parseTimelineToken reads a token of timelineToken.
func parseTimelineToken(tok string) (store.TimelinePos, error) {
	bad := badRequest("from: %q is not a token of this server", tok)
	rest, ok := strings.CutPrefix(tok, "t")
	if !ok {
		return store.TimelinePos{}, bad
	}
	depth, nid, ok := strings.Cut(rest, "_")
	if !ok {
		return store.TimelinePos{}, bad
	}
	d, err1 := strconv.ParseInt(depth, 10, 64)
	n, err2 := strconv.ParseInt(nid, 10, 64)
	if err := errors.Join(err1, err2); err != nil || d < 0 || n < 0 {
		return store.TimelinePos{}, bad
	}
	return store.TimelinePos{Depth: d, NID: n}, nil
}
