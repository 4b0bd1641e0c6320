package store

import "sync"

// nidCache remembers the numbers of recently written or looked-up event
// IDs. An event's number never changes once its row exists (placeholder
// or held) and rows are never deleted, so entries need no invalidation;
// they are published only after the transaction that learnt them commits.
// Bounded: when full it starts again empty, which costs lookups, never
// correctness.
type nidCache struct {
	mu  sync.Mutex
	ids map[string]int64
}

// nidCacheSize bounds the cache: the events a busy room's recent messages
// name as prev and auth events, for many rooms.
const nidCacheSize = 16384

func (c *nidCache) get(id string) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	nid, ok := c.ids[id]
	return nid, ok
}

// publish adds the numbers a committed transaction used.
func (c *nidCache) publish(nids map[string]int64) {
	if len(nids) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil || len(c.ids)+len(nids) > nidCacheSize {
		c.ids = make(map[string]int64, min(nidCacheSize, 2*len(nids)))
	}
	if len(nids) > nidCacheSize {
		return
	}
	for id, nid := range nids {
		c.ids[id] = nid
	}
}

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

// extremityCache remembers each room's forward extremities (numbers and
// IDs) as the last committed event write left them, so that the next
// write of the room need not read them. Only event writes change the
// table, and each publishes what it committed; a transaction that wrote
// a room twice (two writes of a group) drops the room instead, since the
// order in which its writers publish is not the order they wrote in.
type extremityCache struct {
	mu    sync.Mutex
	rooms map[int64]map[int64]string
}

// extremityCacheRooms bounds the cache; when full it starts again empty.
const extremityCacheRooms = 65536

func (c *extremityCache) get(roomNID int64) (map[int64]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ext, ok := c.rooms[roomNID]
	return ext, ok
}

// publish records ext (not to be changed afterwards) as the room's
// extremities; a nil ext forgets the room.
func (c *extremityCache) publish(roomNID int64, ext map[int64]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ext == nil {
		delete(c.rooms, roomNID)
		return
	}
	if c.rooms == nil || len(c.rooms) >= extremityCacheRooms {
		c.rooms = make(map[int64]map[int64]string)
	}
	c.rooms[roomNID] = ext
}

// eventRowCache remembers what the state code reads of recently written
// events (number, state key, outcome, state snapshots before and after),
// so that a room's next write finds the event it follows without a
// query. Only rows a committed transaction wrote or changed are
// published: a row merely read could be older than a change another
// write of the same transaction made and publishes. Bounded: when full it
// starts again empty.
type eventRowCache struct {
	mu   sync.Mutex
	rows map[string]eventRow
}

// eventRowCacheSize bounds the cache: the last events of many rooms.
const eventRowCacheSize = 16384

func (c *eventRowCache) get(id string) (eventRow, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.rows[id]
	return r, ok
}

// publish adds the rows a committed transaction wrote or changed.
func (c *eventRowCache) publish(rows map[string]*eventRow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, r := range rows {
		if !r.changed || !r.held {
			continue
		}
		if c.rows == nil || len(c.rows) >= eventRowCacheSize {
			c.rows = make(map[string]eventRow)
		}
		cached := *r
		cached.changed = false
		c.rows[id] = cached
	}
}
