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
