package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"sync"
)

// loadStateIDs returns the full state of a chain with names and IDs. The
// full root comes from the root cache when it can (full snapshots never
// change); the deltas below it are read and applied on a copy.
func (db *DB) loadStateIDs(t *txn, chain []snapNode) (StateMap, error) {
	if len(chain) == 0 {
		return StateMap{}, nil
	}
	root := chain[len(chain)-1]
	base, ok := db.roots.get(root.nid)
	if !ok {
		base = make(StateMap, root.rows)
		err := db.scanNamedEntries(t, root.nid, func(_ int64, k StateKey, id sql.NullString) {
			if id.Valid {
				base[k] = id.String
			}
		})
		if err != nil {
			return nil, err
		}
		db.roots.put(root.nid, base)
	}
	out := maps.Clone(base)
	for i := len(chain) - 2; i >= 0; i-- {
		err := db.scanNamedEntries(t, chain[i].nid, func(_ int64, k StateKey, id sql.NullString) {
			if id.Valid {
				out[k] = id.String
			} else {
				delete(out, k)
			}
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (db *DB) scanNamedEntries(t *txn, snap int64, fn func(sk int64, k StateKey, id sql.NullString)) error {
	rows, err := t.query(db.d.stateEntriesNamed, snap)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var sk int64
		var k StateKey
		var id sql.NullString
		if err := rows.Scan(&sk, &k.Type, &k.StateKey, &id); err != nil {
			return err
		}
		fn(sk, k, id)
	}
	return rows.Err()
}

// rootCache keeps the named state of recently read full snapshots, up to
// a number of entries in all. Full snapshots are immutable, so entries
// never go stale; callers get copies.
type rootCache struct {
	mu      sync.Mutex
	limit   int
	size    int
	entries map[int64]StateMap
	order   []int64 // least recently used first
}

func (c *rootCache) get(nid int64) (StateMap, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.entries[nid]
	if ok {
		c.touch(nid)
	}
	return m, ok
}

func (c *rootCache) touch(nid int64) {
	for i, n := range c.order {
		if n == nid {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
	c.order = append(c.order, nid)
}

func (c *rootCache) put(nid int64, m StateMap) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(m) > c.limit {
		return
	}
	if c.entries == nil {
		c.entries = make(map[int64]StateMap)
	}
	if _, ok := c.entries[nid]; ok {
		return
	}
	for c.size+len(m) > c.limit && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		c.size -= len(c.entries[old])
		delete(c.entries, old)
	}
	c.entries[nid] = m
	c.size += len(m)
	c.order = append(c.order, nid)
}

// StateBefore returns the room state before a held, non-outlier event
// (what /state_ids serves): state key → event ID.
func (db *DB) StateBefore(ctx context.Context, eventID string) (StateMap, error) {
	var out StateMap
	err := db.read(ctx, func(t *txn) error {
		r, err := db.eventRow(t, eventID)
		if err != nil {
			return err
		}
		if !r.before.Valid {
			return fmt.Errorf("event %s: %w", eventID, ErrNoState)
		}
		chain, err := db.chain(t, r.before.Int64)
		if err != nil {
			return err
		}
		out, err = db.loadStateIDs(t, chain)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: state before: %w", err)
	}
	return out, nil
}

// StateAfter returns the room state after a held, non-outlier event: the
// state before it plus the event itself if it is a state event that was
// not rejected.
func (db *DB) StateAfter(ctx context.Context, eventID string) (StateMap, error) {
	var out StateMap
	err := db.read(ctx, func(t *txn) error {
		r, err := db.eventRow(t, eventID)
		if err != nil {
			return err
		}
		snap := r.after
		if !snap.Valid {
			snap = r.before
		}
		if !snap.Valid {
			return fmt.Errorf("event %s: %w", eventID, ErrNoState)
		}
		chain, err := db.chain(t, snap.Int64)
		if err != nil {
			return err
		}
		if out, err = db.loadStateIDs(t, chain); err != nil {
			return err
		}
		if !r.after.Valid && r.stateKey != 0 && !r.rejected {
			k, err := db.stateKeyName(t, r.stateKey)
			if err != nil {
				return err
			}
			out[k] = eventID
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: state after: %w", err)
	}
	return out, nil
}

func (db *DB) stateKeyName(t *txn, nid int64) (StateKey, error) {
	db.mu.Lock()
	k, ok := db.skNames[nid]
	db.mu.Unlock()
	if ok {
		return k, nil
	}
	err := t.queryRow(db.d.stateKeyByNID, nid).Scan(&k.Type, &k.StateKey)
	return k, err
}

// stateKeyNIDRead looks a state key's number up without making one.
func (db *DB) stateKeyNIDRead(t *txn, k StateKey) (int64, error) {
	db.mu.Lock()
	nid, ok := db.stateKeys[k]
	db.mu.Unlock()
	if ok {
		return nid, nil
	}
	err := t.queryRow(db.d.lookupStateKey, k.Type, k.StateKey).Scan(&nid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("state %s/%q: %w", k.Type, k.StateKey, ErrNotFound)
	}
	return nid, err
}

// StateEventBefore returns the ID of the event holding key in the state
// before eventID; ErrNotFound when the key is not set there. It reads at
// most one entry per snapshot node, never the whole state.
func (db *DB) StateEventBefore(ctx context.Context, eventID string, key StateKey) (string, error) {
	var out string
	err := db.read(ctx, func(t *txn) error {
		r, err := db.eventRow(t, eventID)
		if err != nil {
			return err
		}
		if !r.before.Valid {
			return fmt.Errorf("event %s: %w", eventID, ErrNoState)
		}
		sk, err := db.stateKeyNIDRead(t, key)
		if err != nil {
			return err
		}
		chain, err := db.chain(t, r.before.Int64)
		if err != nil {
			return err
		}
		v, err := db.valueAt(t, chain, sk)
		if err != nil {
			return err
		}
		if v == 0 {
			return fmt.Errorf("state %s/%q: %w", key.Type, key.StateKey, ErrNotFound)
		}
		return t.queryRow(db.d.eventIDByNID, v).Scan(&out)
	})
	if err != nil {
		return "", fmt.Errorf("store: state event before: %w", err)
	}
	return out, nil
}

// CurrentState returns the room's current state.
func (db *DB) CurrentState(ctx context.Context, roomID string) (StateMap, error) {
	out := StateMap{}
	err := db.read(ctx, func(t *txn) error {
		room, err := db.roomNID(t, roomID)
		if err != nil {
			return err
		}
		rows, err := t.query(db.d.currentState, room)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k StateKey
			var id string
			if err := rows.Scan(&k.Type, &k.StateKey, &id); err != nil {
				return err
			}
			out[k] = id
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: current state: %w", err)
	}
	return out, nil
}

// CurrentStateEvent returns the ID of the event holding key in the room's
// current state; ErrNotFound when the key is not set.
func (db *DB) CurrentStateEvent(ctx context.Context, roomID string, key StateKey) (string, error) {
	var out string
	err := db.read(ctx, func(t *txn) error {
		room, err := db.roomNID(t, roomID)
		if err != nil {
			return err
		}
		err = t.queryRow(db.d.currentStateEvent, room, key.Type, key.StateKey).Scan(&out)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("state %s/%q: %w", key.Type, key.StateKey, ErrNotFound)
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("store: current state event: %w", err)
	}
	return out, nil
}

// ForwardExtremities returns the room's forward extremities, sorted.
func (db *DB) ForwardExtremities(ctx context.Context, roomID string) ([]string, error) {
	out, err := db.roomStrings(ctx, roomID, db.d.forwardExtremities)
	if err != nil {
		return nil, fmt.Errorf("store: forward extremities: %w", err)
	}
	return out, nil
}

// JoinedServers returns the servers of the users whose current membership
// is "join", sorted: the servers an event of the room goes to.
func (db *DB) JoinedServers(ctx context.Context, roomID string) ([]string, error) {
	out, err := db.roomStrings(ctx, roomID, db.d.joinedServers)
	if err != nil {
		return nil, fmt.Errorf("store: joined servers: %w", err)
	}
	return out, nil
}

// Members returns the users whose current membership is membership
// ("join", "invite", ...), sorted.
func (db *DB) Members(ctx context.Context, roomID, membership string) ([]string, error) {
	out, err := db.roomStrings(ctx, roomID, db.d.members, membership)
	if err != nil {
		return nil, fmt.Errorf("store: members: %w", err)
	}
	return out, nil
}

func (db *DB) roomStrings(ctx context.Context, roomID, query string, args ...any) ([]string, error) {
	var out []string
	err := db.read(ctx, func(t *txn) error {
		room, err := db.roomNID(t, roomID)
		if err != nil {
			return err
		}
		out, err = t.queryStrings(query, append([]any{room}, args...)...)
		return err
	})
	return out, err
}
