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
// outliers, soft-failed or rejected) in topological order (depth, then
// arrival). from is a token of an earlier page ("" starts at the newest
// event going backwards, at the oldest going forwards); end is the token
// of the next page, "" when there is no more. Paging backwards past the
// oldest event held, when that is not the room's create event, backfills
// from the other servers in the room (BackfillRoom) and goes on; when
// every server fails and the page would be empty, the error is
// Unavailable (with events in hand, the page is returned and the next one
// tries again).
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
	more := len(page) == limit
	if backwards && !more {
		page, more, err = h.backfillPage(ctx, roomID, start, page, limit)
		if err != nil {
			return nil, "", err
		}
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
	if more && len(page) > 0 {
		end = timelineToken(page[len(page)-1].Pos)
	}
	return chunk, end, nil
}

// maxBackfillRounds bounds the backfill requests one page of Messages
// makes.
const maxBackfillRounds = 3

// backfillPage completes a backwards page that reached the oldest event
// held: while that event is not the create event and its prev events are
// not held, history is backfilled and the page goes on from it. It
// returns the page and whether there may be more before it.
func (h *Host) backfillPage(ctx context.Context, roomID string, start *store.TimelinePos, page []store.TimelineEvent, limit int) ([]store.TimelineEvent, bool, error) {
	for round := 0; round < maxBackfillRounds && len(page) < limit; round++ {
		var oldest store.TimelineEvent
		switch {
		case len(page) > 0:
			oldest = page[len(page)-1]
		case start != nil:
			te, err := h.store().TimelineAt(ctx, roomID, *start)
			if errors.Is(err, store.ErrNotFound) {
				// A token of no held event: nothing to go back from.
				return page, false, nil
			}
			if err != nil {
				return nil, false, fmt.Errorf("messages: %w", err)
			}
			oldest = te
		default:
			return page, false, nil // no timeline at all
		}
		if oldest.Event.Event.Type() == "m.room.create" {
			return page, false, nil
		}
		missing, err := h.Engine.prevsWithoutState(ctx, oldest.Event.Event)
		if err != nil {
			return nil, false, fmt.Errorf("messages: %w", err)
		}
		if len(missing) == 0 {
			return page, false, nil
		}
		n, err := h.Engine.BackfillRoom(ctx, roomID, []string{oldest.Event.Event.EventID()}, limit-len(page)+1)
		var refusal *Error
		if errors.As(err, &refusal) && refusal.NotFound() {
			// None of our users is in the room any more: its history
			// is what we hold.
			return page, false, nil
		}
		if err != nil {
			if len(page) > 0 {
				h.Engine.Logger.Warn().Err(err).Str(fieldRoomID, roomID).Msg("backfill failed; answering with the events held")
				return page, true, nil
			}
			return nil, false, err
		}
		if n == 0 {
			return page, false, nil
		}
		more, err := h.store().Timeline(ctx, roomID, &oldest.Pos, true, limit-len(page))
		if err != nil {
			return nil, false, fmt.Errorf("messages: %w", err)
		}
		if len(more) == 0 {
			return page, false, nil
		}
		page = append(page, more...)
	}
	// Full, or out of rounds with events found: there may be more.
	return page, len(page) > 0, nil
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
