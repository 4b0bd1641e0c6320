package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Host log entry kinds.
const (
	HostEvent  = "event"  // an accepted event of a room (EventID set)
	HostInvite = "invite" // an invite for a local user (Payload: the invite event)
	HostKnock  = "knock"  // a knock on a room of ours
	HostEDU    = "edu"    // an EDU the host cares about (typing, receipts)
)

// HostLogEntry is an item to append to the host event log.
type HostLogEntry struct {
	Kind   string
	RoomID string
	// EventID names a held event for HostEvent entries; its JSON is read
	// when the entry is read, so a later redaction shows.
	EventID string
	// Payload is the JSON of other kinds.
	Payload []byte
}

// HostLogRecord is an entry read back from the host event log.
type HostLogRecord struct {
	Pos     int64
	Kind    string
	RoomID  string
	EventID string // for HostEvent
	// Payload is the event JSON for HostEvent entries, the stored payload
	// for the others.
	Payload []byte
	TS      int64 // when it was appended, ms since the epoch
}

// hostLogNotifier wakes WaitHostLog callers when the log grows.
type hostLogNotifier struct {
	mu     sync.Mutex
	head   int64
	ch     chan struct{}
	closed bool
}

func (n *hostLogNotifier) init() { n.ch = make(chan struct{}) }

func (n *hostLogNotifier) advance(pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.head && !n.closed {
		n.head = pos
		close(n.ch)
		n.ch = make(chan struct{})
	}
}

func (n *hostLogNotifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.closed = true
		close(n.ch)
	}
}

// appendHostLog appends entries; written has the events rows written by
// the same transaction, to spare their look-ups.
func (db *DB) appendHostLog(t *txn, entries []HostLogEntry, written map[string]*eventRow) ([]int64, error) {
	cols := len(db.d.hostLogRows.columns)
	args := make([]any, 0, len(entries)*cols)
	now := db.now()
	for _, e := range entries {
		switch e.Kind {
		case HostEvent, HostInvite, HostKnock, HostEDU:
		default:
			return nil, fmt.Errorf("host log: unknown kind %q", e.Kind)
		}
		var nid sql.NullInt64
		if r, ok := written[e.EventID]; ok && e.EventID != "" {
			nid = sql.NullInt64{Int64: r.nid, Valid: true}
		} else if e.EventID != "" {
			err := t.queryRow(db.d.heldEventNID, e.EventID).Scan(&nid.Int64)
			if errors.Is(err, sql.ErrNoRows) {
				return nil, fmt.Errorf("host log: event %s: %w", e.EventID, ErrNotFound)
			}
			if err != nil {
				return nil, err
			}
			nid.Valid = true
		} else if e.Kind == HostEvent {
			return nil, errors.New("host log: event entry without an event ID")
		}
		args = append(args, e.Kind, e.RoomID, nid, e.Payload, now)
	}
	if t.shared != nil {
		return db.bufferHostLog(t, args, cols)
	}
	out := make([]int64, 0, len(entries))
	for len(args) > 0 {
		n := pow2Chunk(len(args) / cols)
		rows, err := t.query(db.d.multiInsert(db.d.hostLogRows, n), args[:n*cols]...)
		if err != nil {
			return nil, err
		}
		var got []int64
		for rows.Next() {
			var pos int64
			if err := rows.Scan(&pos); err != nil {
				rows.Close()
				return nil, err
			}
			got = append(got, pos)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		// Positions are given in VALUES order; RETURNING's order is not
		// promised, so sort.
		slices.Sort(got)
		out = append(out, got...)
		args = args[n*cols:]
	}
	return out, nil
}

// bufferHostLog numbers host log rows (args, cols values each) itself and
// adds them to a merged group's shared rows: the rooms of an inbound
// transaction append theirs with one statement instead of one each. The
// log is only appended to, by the one writer, so the next position is
// the highest plus one.
func (db *DB) bufferHostLog(t *txn, args []any, cols int) ([]int64, error) {
	if !t.hostPosKnown {
		if err := t.queryRow(db.d.hostLogHead).Scan(&t.hostPos); err != nil {
			return nil, err
		}
		t.hostPosKnown = true
	}
	w := &wtx{t: t, db: db, writeBuffers: t.shared}
	out := make([]int64, 0, len(args)/cols)
	for row := range slices.Chunk(args, cols) {
		t.hostPos++
		if err := w.add(w.hostLog, append([]any{t.hostPos}, row...)...); err != nil {
			return nil, err
		}
		out = append(out, t.hostPos)
	}
	return out, nil
}

// AppendHostLog appends entries to the host event log in one transaction
// and returns their positions.
func (db *DB) AppendHostLog(ctx context.Context, entries ...HostLogEntry) ([]int64, error) {
	var out []int64
	err := db.write(ctx, func(t *txn) error {
		var err error
		out, err = db.appendHostLog(t, entries, nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: append host log: %w", err)
	}
	if len(out) > 0 {
		db.hostLog.advance(out[len(out)-1])
	}
	return out, nil
}

// ReadHostLog returns up to limit entries after position after, in order.
func (db *DB) ReadHostLog(ctx context.Context, after int64, limit int) ([]HostLogRecord, error) {
	var out []HostLogRecord
	err := db.read(ctx, func(t *txn) error {
		rows, err := t.query(db.d.readHostLog, after, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r HostLogRecord
			var eventID sql.NullString
			if err := rows.Scan(&r.Pos, &r.Kind, &r.RoomID, &eventID, &r.Payload, &r.TS); err != nil {
				return err
			}
			r.EventID = eventID.String
			out = append(out, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: read host log: %w", err)
	}
	return out, nil
}

// HostLogHead returns the position of the newest entry (0: empty log).
func (db *DB) HostLogHead(ctx context.Context) (int64, error) {
	var head int64
	err := db.read(ctx, func(t *txn) error {
		return t.queryRow(db.d.hostLogHead).Scan(&head)
	})
	if err != nil {
		return 0, fmt.Errorf("store: host log head: %w", err)
	}
	db.hostLog.advance(head)
	return head, nil
}

// WaitHostLog blocks until the host log has an entry after position
// after, ctx ends, or the DB is closed. It sees appends made through this
// DB value.
func (db *DB) WaitHostLog(ctx context.Context, after int64) error {
	if _, err := db.HostLogHead(ctx); err != nil {
		return err
	}
	for {
		db.hostLog.mu.Lock()
		head, ch, closed := db.hostLog.head, db.hostLog.ch, db.hostLog.closed
		db.hostLog.mu.Unlock()
		if head > after {
			return nil
		}
		if closed {
			return fmt.Errorf("store: wait host log: %w", sql.ErrConnDone)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Cursor returns a consumer's position in the host log (0 if it has none).
func (db *DB) Cursor(ctx context.Context, name string) (int64, error) {
	var pos int64
	err := db.read(ctx, func(t *txn) error {
		err := t.queryRow(db.d.cursor, name).Scan(&pos)
		if errors.Is(err, sql.ErrNoRows) {
			pos = 0
			return nil
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: cursor: %w", err)
	}
	return pos, nil
}

// SetCursor moves a consumer's position in the host log. Cursors only
// move forward: a position before the stored one is ignored, so a late
// acknowledgement cannot replay delivered entries.
func (db *DB) SetCursor(ctx context.Context, name string, pos int64) error {
	err := db.write(ctx, func(t *txn) error {
		_, err := t.exec(db.d.setCursor, name, pos)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: set cursor: %w", err)
	}
	return nil
}
