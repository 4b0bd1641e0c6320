package federation

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/ferry-matrix/ferry/keys"
)

// keyDocumentCache holds our signed key document. Signing on every request
// would let anyone make us do ed25519 work for free, so the document is
// signed once and re-signed when half of its validity has passed.
type keyDocumentCache struct {
	mu        sync.Mutex
	body      []byte
	refreshAt time.Time
}

// KeyDocument returns the signed body of GET /_matrix/key/v2/server:
// all our current keys, the retired ones, valid_until_ts KeyValidity
// ahead of when it was signed. It is safe for concurrent use.
func (s *Server) KeyDocument() ([]byte, error) {
	now := s.now()
	c := &s.keyDoc
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.body != nil && now.Before(c.refreshAt) {
		return c.body, nil
	}
	validity := s.KeyValidity
	if validity <= 0 {
		validity = DefaultKeyValidity
	}
	body, err := keys.ServerKeyDocument(s.ServerName, s.Keys, now.Add(validity).UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("sign key document: %w", err)
	}
	c.body, c.refreshAt = body, now.Add(validity/2)
	return body, nil
}

func (s *Server) handleServerKeys(w http.ResponseWriter, r *http.Request) error {
	body, err := s.KeyDocument()
	if err != nil {
		return err
	}
	writeRawJSON(w, http.StatusOK, body)
	return nil
}
