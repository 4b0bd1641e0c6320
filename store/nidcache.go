package store

import (
	"iter"
	"sync"
)

// boundedCache is a map the store's writers publish into once their
// transaction commits, and consult before reading the database. Bounded:
// when a batch would take it past its limit it starts again empty, and a
// batch larger than the limit is not kept, which costs lookups, never
// correctness.
type boundedCache[K comparable, V any] struct {
	limit int
	mu    sync.Mutex
	m     map[K]V
}

func (c *boundedCache[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

// publish adds the n entries that entries yields.
func (c *boundedCache[K, V]) publish(n int, entries iter.Seq2[K, V]) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m)+n > c.limit {
		c.m = make(map[K]V, min(c.limit, 2*n))
	}
	if n > c.limit {
		return
	}
	for k, v := range entries {
		c.m[k] = v
	}
}

// forget drops k.
func (c *boundedCache[K, V]) forget(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
}

// The caches of a DB. Event numbers: an event's number never changes once
// its row exists (placeholder or held) and rows are never deleted, so
// entries need no invalidation. Their limits are the events a busy room's
// recent messages name as prev and auth events, for many rooms, and the
// rooms a server is busy in.
const (
	nidCacheSize        = 16384
	eventRowCacheSize   = 16384
	extremityCacheRooms = 65536
)

// roomCache remembers the numbers and versions of rooms with committed
// rows. Room rows are never deleted or renumbered, nor do they change
// version.
type roomCache struct {
	mu    sync.Mutex
	rooms map[string]cachedRoom
}

type cachedRoom struct {
	nid     int64
	version string
}

func (c *roomCache) get(roomID string) (cachedRoom, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.rooms[roomID]
	return r, ok
}

func (c *roomCache) publish(roomID, version string, nid int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rooms == nil {
		c.rooms = make(map[string]cachedRoom)
	}
	c.rooms[roomID] = cachedRoom{nid: nid, version: version}
}

// roomNIDFor is ensureRoom answered from the cache when nothing is to be
// changed (no status given) and the room is known.
func (db *DB) roomNIDFor(t *txn, roomID, version, status string) (int64, error) {
	if r, ok := db.roomNIDs.get(roomID); ok && status == "" && r.version == version {
		return r.nid, nil
	}
	return db.ensureRoom(t, roomID, version, status)
}

// publishExtremities records, once committed, a room's forward
// extremities as a write left them (numbers and IDs, not to be changed
// afterwards), so that the room's next write need not read them; nil
// forgets the room. Only event writes change the table, and each
// publishes what it committed; a transaction that wrote a room twice (two
// writes of a group) forgets the room instead, since the order in which
// its writers publish is not the order they wrote in.
func (db *DB) publishExtremities(roomNID int64, ext map[int64]string) {
	if ext == nil {
		db.exts.forget(roomNID)
		return
	}
	db.exts.publish(1, func(yield func(int64, map[int64]string) bool) { yield(roomNID, ext) })
}

// publishEventRows records, once committed, what the state code reads of
// the events a transaction wrote or changed (number, state key, outcome,
// state snapshots before and after), so that a room's next write finds
// the event it follows without a query. A row merely read is not
// published: it could be older than a change another write of the same
// transaction made and publishes.
func (db *DB) publishEventRows(rows map[string]*eventRow) {
	n := 0
	for _, r := range rows {
		if r.changed && r.held {
			n++
		}
	}
	db.eventRows.publish(n, func(yield func(string, eventRow) bool) {
		for id, r := range rows {
			if !r.changed || !r.held {
				continue
			}
			cached := *r
			cached.changed = false
			if !yield(id, cached) {
				return
			}
		}
	})
}
