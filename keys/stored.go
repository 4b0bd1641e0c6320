package keys

import "crypto/ed25519"

// StoredKey is one verify key of a remote server as the key ring keeps it
// (and as the store persists it).
type StoredKey struct {
	ServerName string            // the server the key belongs to
	KeyID      string            // "ed25519:<version>"
	PublicKey  ed25519.PublicKey // 32 bytes
	// ValidUntilTS is the time (ms since the epoch) up to which the key may
	// verify events: min(valid_until_ts, fetch time + 7 days) for current
	// keys, expired_ts for old keys.
	ValidUntilTS int64
	// Expired is true for keys published under old_verify_keys.
	Expired   bool
	FetchedTS int64  // when we received it, ms since the epoch
	Source    string // "direct" or "notary:<server name>"
}
