package store

import (
	"context"
	"crypto/ed25519"
	"fmt"

	"github.com/ferry-matrix/ferry/keys"
)

// StoreServerKeys saves remote servers' verify keys; a key held already
// (same server and key ID) is replaced by the newer record.
func (db *DB) StoreServerKeys(ctx context.Context, ks []keys.StoredKey) error {
	if len(ks) == 0 {
		return nil
	}
	err := db.write(ctx, func(t *txn) error {
		for _, k := range ks {
			if len(k.PublicKey) != ed25519.PublicKeySize {
				return fmt.Errorf("key %s of %s: public key is %d bytes", k.KeyID, k.ServerName, len(k.PublicKey))
			}
			if _, err := t.exec(db.d.putServerKey, k.ServerName, k.KeyID, []byte(k.PublicKey), k.ValidUntilTS, k.Expired, k.FetchedTS, k.Source); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: store server keys: %w", err)
	}
	return nil
}

// LoadServerKeys returns every key held for a server, by key ID; none is
// an empty list, not an error.
func (db *DB) LoadServerKeys(ctx context.Context, serverName string) ([]keys.StoredKey, error) {
	var out []keys.StoredKey
	err := db.read(ctx, func(t *txn) error {
		rows, err := t.query(db.d.serverKeys, serverName)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			k := keys.StoredKey{ServerName: serverName}
			var pub []byte
			if err := rows.Scan(&k.KeyID, &pub, &k.ValidUntilTS, &k.Expired, &k.FetchedTS, &k.Source); err != nil {
				return err
			}
			k.PublicKey = ed25519.PublicKey(pub)
			out = append(out, k)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: load server keys: %w", err)
	}
	return out, nil
}
