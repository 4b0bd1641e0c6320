package rooms

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"sort"
)

// KeyLookup finds a server's public signing key. Implementations return an
// error when the key is unknown or was not valid at ts (milliseconds): in
// room versions 5 and later a key may only verify events whose
// origin_server_ts falls within its validity.
type KeyLookup interface {
	VerifyKey(server, keyID string, ts int64) (ed25519.PublicKey, error)
}

// RequiredSigners returns the servers whose signatures the event must
// carry: the sender's server, and for a restricted join the server of the
// user in join_authorised_via_users_server.
func (e *Event) RequiredSigners() []string {
	servers := []string{e.SenderServer()}
	if e.typ == "m.room.member" && e.Membership() == "join" {
		if via, ok := e.content["join_authorised_via_users_server"].(string); ok {
			if s := serverOfID(via); s != "" && s != servers[0] {
				servers = append(servers, s)
			}
		}
	}
	return servers
}

// VerifyEventSignatures checks that every server in RequiredSigners signed
// the redacted event with at least one key that keys knows and that was
// valid at the event's origin_server_ts. Signatures under unknown
// algorithms and from other servers are ignored.
func VerifyEventSignatures(e *Event, keys KeyLookup) error {
	red := Redact(e.version, e.obj)
	for _, server := range e.RequiredSigners() {
		if err := verifyServerSignature(red, server, e.ts, keys); err != nil {
			return fmt.Errorf("event %s: %w", e.id, err)
		}
	}
	return nil
}

func verifyServerSignature(red map[string]any, server string, ts int64, keys KeyLookup) error {
	sigs := Signatures(red, server)
	keyIDs := make([]string, 0, len(sigs))
	for keyID := range sigs {
		if IsEd25519KeyID(keyID) {
			keyIDs = append(keyIDs, keyID)
		}
	}
	if len(keyIDs) == 0 {
		return fmt.Errorf("%w %s", ErrNoSignature, server)
	}
	sort.Strings(keyIDs)
	var errs []error
	for _, keyID := range keyIDs {
		pub, err := keys.VerifyKey(server, keyID, ts)
		if err != nil {
			errs = append(errs, fmt.Errorf("key %s of %s: %w", keyID, server, err))
			continue
		}
		if err := VerifyJSONSignature(red, server, keyID, pub); err != nil {
			errs = append(errs, err)
			continue
		}
		return nil
	}
	return errors.Join(errs...)
}
