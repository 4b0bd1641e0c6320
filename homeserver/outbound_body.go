package homeserver

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	"github.com/ferry-matrix/ferry/rooms"
)

// canonicalPDUs keeps the canonical JSON of recently sent PDUs by event
// ID. Every destination of a room is sent the same events, so each is
// parsed and encoded once rather than once per destination; transactions
// are then written as canonical JSON directly and signed without being
// parsed again.
type canonicalPDUs struct {
	mu    sync.Mutex
	byID  map[string][]byte
	order []string // insertion order, for eviction
}

// canonicalPDUsKept bounds the cache: a few transactions' worth for each of
// many destinations that lag one another.
const canonicalPDUsKept = 4096

// get returns the canonical form of the PDU with event ID id and JSON raw.
func (c *canonicalPDUs) get(id string, raw []byte) ([]byte, error) {
	c.mu.Lock()
	b, ok := c.byID[id]
	c.mu.Unlock()
	if ok {
		return b, nil
	}
	b, err := canonicalJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("PDU %s: %w", id, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byID == nil {
		c.byID = make(map[string][]byte)
	}
	if _, ok := c.byID[id]; !ok {
		if len(c.order) >= canonicalPDUsKept {
			delete(c.byID, c.order[0])
			c.order = c.order[1:]
		}
		c.byID[id] = b
		c.order = append(c.order, id)
	}
	return b, nil
}

// canonicalJSON re-encodes raw as canonical JSON.
func canonicalJSON(raw []byte) ([]byte, error) {
	v, err := rooms.ParseJSON(raw)
	if err != nil {
		return nil, err
	}
	return rooms.EncodeCanonical(v)
}

// transactionBody writes an outbound transaction as canonical JSON from
// canonical PDUs and EDUs: the keys in canonical order ("edus" left out
// when there are none, as encoding/json's omitempty would).
func transactionBody(origin string, ts int64, pdus, edus []json.RawMessage) ([]byte, error) {
	size := len(origin) + 64
	for _, p := range pdus {
		size += len(p) + 1
	}
	for _, e := range edus {
		size += len(e) + 1
	}
	b := make([]byte, 0, size)
	b = append(b, '{')
	if len(edus) > 0 {
		b = append(b, `"edus":`...)
		b = appendList(b, edus)
		b = append(b, ',')
	}
	b = append(b, `"origin":`...)
	b, err := rooms.AppendCanonical(b, origin)
	if err != nil {
		return nil, fmt.Errorf("transaction origin: %w", err)
	}
	b = append(b, `,"origin_server_ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, `,"pdus":`...)
	b = appendList(b, pdus)
	return append(b, '}'), nil
}

func appendList(b []byte, items []json.RawMessage) []byte {
	b = append(b, '[')
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, it...)
	}
	return append(b, ']')
}
