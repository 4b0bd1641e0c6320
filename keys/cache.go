package keys

import (
	"context"
	"sync"
)

// KeyCache is the persistent cache of other servers' keys the Ring reads
// through and writes to. The store implements it; MemoryCache is the
// in-process implementation used by default and in tests.
//
// Implementations must be safe for concurrent use.
type KeyCache interface {
	// StoreServerKeys inserts or replaces keys, matched by (ServerName,
	// KeyID). Keys of other IDs already stored are kept.
	StoreServerKeys(ctx context.Context, keys []StoredKey) error
	// LoadServerKeys returns every stored key of serverName, current and
	// expired, or none.
	LoadServerKeys(ctx context.Context, serverName string) ([]StoredKey, error)
}

// KeyDocumentCache is implemented by caches that also keep the latest
// signed key document of each server, so that our notary endpoint can
// answer for a server that went offline even after a restart. The Ring
// uses it when its KeyCache implements it and otherwise keeps documents in
// memory only.
type KeyDocumentCache interface {
	// StoreKeyDocument replaces the document kept for serverName. doc is
	// canonical JSON carrying the server's own signatures only.
	StoreKeyDocument(ctx context.Context, serverName string, doc []byte) error
	// LoadKeyDocument returns the document kept for serverName, or nil.
	LoadKeyDocument(ctx context.Context, serverName string) ([]byte, error)
}

// MemoryCache is a KeyCache and KeyDocumentCache held in memory. The zero
// value is empty and ready; it is safe for concurrent use.
type MemoryCache struct {
	mu   sync.Mutex
	keys map[string]map[string]StoredKey
	docs map[string][]byte
}

var (
	_ KeyCache         = (*MemoryCache)(nil)
	_ KeyDocumentCache = (*MemoryCache)(nil)
)

// StoreServerKeys implements KeyCache.
func (c *MemoryCache) StoreServerKeys(_ context.Context, keys []StoredKey) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = map[string]map[string]StoredKey{}
	}
	for _, k := range keys {
		m := c.keys[k.ServerName]
		if m == nil {
			m = map[string]StoredKey{}
			c.keys[k.ServerName] = m
		}
		m[k.KeyID] = k
	}
	return nil
}

// LoadServerKeys implements KeyCache.
func (c *MemoryCache) LoadServerKeys(_ context.Context, serverName string) ([]StoredKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]StoredKey, 0, len(c.keys[serverName]))
	for _, k := range c.keys[serverName] {
		out = append(out, k)
	}
	return out, nil
}

// StoreKeyDocument implements KeyDocumentCache.
func (c *MemoryCache) StoreKeyDocument(_ context.Context, serverName string, doc []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.docs == nil {
		c.docs = map[string][]byte{}
	}
	c.docs[serverName] = append([]byte(nil), doc...)
	return nil
}

// LoadKeyDocument implements KeyDocumentCache.
func (c *MemoryCache) LoadKeyDocument(_ context.Context, serverName string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.docs[serverName], nil
}
