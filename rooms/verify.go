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
// origin_server_ts falls within its validity. Such keys are skipped, as the
// spec's "Validating hashes and signatures on received events" asks.
type KeyLookup interface {
	VerifyKey(server, keyID string, ts int64) (ed25519.PublicKey, error)
}

// ErrSignerMissing is matched when an event needs a server's signature
// that cannot be required because the event does not say which server it
// is (a malformed join_authorised_via_users_server).
var ErrSignerMissing = errors.New("required signer cannot be determined")

// RequiredSigners returns the servers whose signatures the event must
// carry: the sender's server (room versions 3 and later need no other for
// ordinary events, third-party invites included: their sender is the
// inviting user and the identity server's signature lives inside content,
// checked by the auth rules), and, when an m.room.member event's content
// has join_authorised_via_users_server, the server of that user (v10 auth
// rule 4.2, v12 5.2: whatever the membership).
func (e *Event) RequiredSigners() []string {
	servers := []string{e.SenderServer()}
	if via, ok := e.authorisingServer(); ok && via != "" && via != servers[0] {
		servers = append(servers, via)
	}
	return servers
}

// authorisingServer returns the server of join_authorised_via_users_server
// and whether the key is present on a member event. A present key that is
// not a user ID yields "".
func (e *Event) authorisingServer() (string, bool) {
	if e.typ != "m.room.member" {
		return "", false
	}
	raw, present := e.content["join_authorised_via_users_server"]
	if !present {
		return "", false
	}
	s, _ := raw.(string)
	u, err := ParseUserID(s)
	if err != nil {
		return "", true
	}
	return string(u.Server()), true
}

// VerifyEventSignatures checks the signatures of every server in
// RequiredSigners on the redacted event, following the appendix's
// "Checking for a signature": signatures under unknown algorithms and
// from keys the lookup does not know (or that had expired by the event's
// origin_server_ts) are skipped; every remaining signature of a required
// server must verify, and each required server needs at least one.
// Signatures of other servers (a policy server, say) are ignored.
func VerifyEventSignatures(e *Event, keys KeyLookup) error {
	msg, err := e.signedBytes()
	if err != nil {
		return fmt.Errorf("event %s: %w", e.id, err)
	}
	if via, present := e.authorisingServer(); present && via == "" {
		return fmt.Errorf("event %s: %w: join_authorised_via_users_server is not a user ID", e.id, ErrSignerMissing)
	}
	sigs, _ := e.obj["signatures"].(map[string]any)
	for _, server := range e.RequiredSigners() {
		entity, _ := sigs[server].(map[string]any)
		if err := verifyServerSignatures(msg, server, entity, e.ts, keys); err != nil {
			return fmt.Errorf("event %s: %w", e.id, err)
		}
	}
	return nil
}

// verifyServerSignatures checks the signatures of one server over msg.
func verifyServerSignatures(msg []byte, server string, entity map[string]any, ts int64, keys KeyLookup) error {
	keyIDs := make([]string, 0, len(entity))
	for keyID := range entity {
		if IsEd25519KeyID(keyID) {
			keyIDs = append(keyIDs, keyID)
		}
	}
	if len(keyIDs) == 0 {
		return fmt.Errorf("%w %s", ErrNoSignature, server)
	}
	sort.Strings(keyIDs)
	var skipped []error
	verified := 0
	for _, keyID := range keyIDs {
		pub, err := keys.VerifyKey(server, keyID, ts)
		if err != nil {
			skipped = append(skipped, fmt.Errorf("key %s of %s: %w", keyID, server, err))
			continue
		}
		sigB64, _ := entity[keyID].(string)
		if err := verifySignatureBytes(msg, server, keyID, sigB64, pub); err != nil {
			return err
		}
		verified++
	}
	if verified == 0 {
		return fmt.Errorf("%w %s under a known key: %w", ErrNoSignature, server, errors.Join(skipped...))
	}
	return nil
}

// verifySignatureBytes checks one base64 ed25519 signature over msg.
func verifySignatureBytes(msg []byte, entity, keyID, sigB64 string, pub ed25519.PublicKey) error {
	sig, err := DecodeBase64(sigB64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: %s %s: malformed signature", ErrBadSignature, entity, keyID)
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: %s %s: malformed public key", ErrBadSignature, entity, keyID)
	}
	if !ed25519.Verify(pub, msg, sig) {
		return fmt.Errorf("%w: %s %s", ErrBadSignature, entity, keyID)
	}
	return nil
}

// CheckEvent runs the signature and hash checks the spec asks of every
// received PDU ("Checks performed on receipt of a PDU", steps 2 and 3).
// A signature failure is an error: the event must be dropped. If the
// signatures hold but the content hash does not match, the sender's
// server may only have had the redacted event, so CheckEvent returns the
// redacted copy (Redacted) and no error; otherwise it returns e itself.
// Callers tell the two apart by comparing the result with e.
func CheckEvent(e *Event, keys KeyLookup) (*Event, error) {
	if err := VerifyEventSignatures(e, keys); err != nil {
		return nil, err
	}
	if !e.ContentHashValid() {
		return e.Redacted(), nil
	}
	return e, nil
}
