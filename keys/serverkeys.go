package keys

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"sort"

	"github.com/ferry-matrix/ferry/rooms"
)

// MaxValidityMS caps how long a fetched key is trusted past its fetch time:
// room versions 5 and later treat a key as valid until
// min(valid_until_ts, fetch time + 7 days).
const MaxValidityMS = 7 * 24 * 60 * 60 * 1000

// ErrInvalidServerKeys is matched by every error ParseServerKeys returns for
// a document that is malformed, for another server, or not properly
// self-signed.
var ErrInvalidServerKeys = errors.New("invalid server key document")

// ServerKeyDocument builds and signs the body of GET /_matrix/key/v2/server
// for serverName: every current key under verify_keys, retired keys under
// old_verify_keys, valid_until_ts as given (ms). The document is signed by
// each current key, as the spec asks, and returned as canonical JSON.
func ServerKeyDocument(serverName string, own *Own, validUntilTS int64) ([]byte, error) {
	if len(own.Current) == 0 {
		return nil, errors.New("server key document: no current key")
	}
	verify := make(map[string]any, len(own.Current))
	for _, k := range own.Current {
		verify[k.KeyID()] = map[string]any{"key": rooms.EncodeBase64(k.Public())}
	}
	old := make(map[string]any, len(own.Old))
	for _, k := range own.Old {
		old[k.KeyID] = map[string]any{"key": rooms.EncodeBase64(k.Public), "expired_ts": k.ExpiredTS}
	}
	doc := map[string]any{
		"server_name":     serverName,
		"verify_keys":     verify,
		"old_verify_keys": old,
		"valid_until_ts":  validUntilTS,
	}
	for _, k := range own.Current {
		if err := rooms.SignJSON(doc, k.SigningKey(serverName)); err != nil {
			return nil, fmt.Errorf("server key document: %w", err)
		}
	}
	return rooms.EncodeCanonical(doc)
}

// ServerKeys is a server key document that passed ParseServerKeys.
type ServerKeys struct {
	ServerName    string
	VerifyKeys    map[string]ed25519.PublicKey // key ID -> key; ed25519 only
	OldVerifyKeys map[string]OldKey            // key ID -> retired key
	ValidUntilTS  int64                        // as published, ms
	FetchedTS     int64                        // when we received it, ms
	// Object is the parsed document, signatures included, for callers
	// that pass it on (a notary adds its own signature to it).
	Object map[string]any
}

// ParseServerKeys parses and checks a server key document received from
// the network (directly or through a notary): it must be a JSON object for
// expectServer, carry valid_until_ts, publish at least one ed25519 verify
// key, and be signed by every ed25519 key in verify_keys. Keys under other
// algorithms are ignored. fetchedTS (ms) is when the document arrived; it
// bounds how long the keys are trusted (see EffectiveValidUntilTS).
//
// A document whose valid_until_ts has passed is not rejected: its keys
// still verify events sent before then, and the caller decides whether it
// needs a fresher copy.
func ParseServerKeys(raw []byte, expectServer string, fetchedTS int64) (*ServerKeys, error) {
	v, err := rooms.ParseJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidServerKeys, err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: not a JSON object", ErrInvalidServerKeys)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w from %s: %s", ErrInvalidServerKeys, expectServer, fmt.Sprintf(format, args...))
	}

	name, _ := obj["server_name"].(string)
	if name != expectServer {
		return nil, bad("server_name is %q", name)
	}
	validUntil, ok := obj["valid_until_ts"].(int64)
	if !ok || validUntil < 0 {
		return nil, bad("valid_until_ts is missing or not a non-negative integer")
	}
	keys := &ServerKeys{
		ServerName:    name,
		VerifyKeys:    map[string]ed25519.PublicKey{},
		OldVerifyKeys: map[string]OldKey{},
		ValidUntilTS:  validUntil,
		FetchedTS:     fetchedTS,
		Object:        obj,
	}

	verify, ok := obj["verify_keys"].(map[string]any)
	if !ok {
		return nil, bad("verify_keys is missing or not an object")
	}
	for keyID, entry := range verify {
		if !rooms.IsEd25519KeyID(keyID) {
			continue
		}
		pub, err := publicKeyField(entry)
		if err != nil {
			return nil, bad("verify_keys[%s]: %v", keyID, err)
		}
		keys.VerifyKeys[keyID] = pub
	}
	if len(keys.VerifyKeys) == 0 {
		return nil, bad("no ed25519 key in verify_keys")
	}

	if oldRaw, present := obj["old_verify_keys"]; present {
		old, ok := oldRaw.(map[string]any)
		if !ok {
			return nil, bad("old_verify_keys is not an object")
		}
		for keyID, entry := range old {
			if !rooms.IsEd25519KeyID(keyID) {
				continue
			}
			pub, err := publicKeyField(entry)
			if err != nil {
				return nil, bad("old_verify_keys[%s]: %v", keyID, err)
			}
			expired, ok := entry.(map[string]any)["expired_ts"].(int64)
			if !ok || expired < 0 {
				return nil, bad("old_verify_keys[%s]: expired_ts is missing or not a non-negative integer", keyID)
			}
			keys.OldVerifyKeys[keyID] = OldKey{KeyID: keyID, Public: pub, ExpiredTS: expired}
		}
	}

	// Every published key must have signed: a document signed by only one
	// of them could carry a key its owner never vouched for.
	ids := make([]string, 0, len(keys.VerifyKeys))
	for id := range keys.VerifyKeys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if err := rooms.VerifyJSONSignature(obj, name, id, keys.VerifyKeys[id]); err != nil {
			return nil, fmt.Errorf("%w from %s: self-signature: %w", ErrInvalidServerKeys, expectServer, err)
		}
	}
	return keys, nil
}

func publicKeyField(entry any) (ed25519.PublicKey, error) {
	m, ok := entry.(map[string]any)
	if !ok {
		return nil, errors.New("not an object")
	}
	s, ok := m["key"].(string)
	if !ok {
		return nil, errors.New("key is missing or not a string")
	}
	pub, err := rooms.DecodeBase64(s)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("key is not 32 bytes of base64")
	}
	return ed25519.PublicKey(pub), nil
}

// EffectiveValidUntilTS is how long the current keys may verify events:
// min(valid_until_ts, FetchedTS + 7 days).
func (k *ServerKeys) EffectiveValidUntilTS() int64 {
	return min(k.ValidUntilTS, k.FetchedTS+MaxValidityMS)
}

// StoredKeys returns every key of the document as the key ring and the
// store keep them, with source recorded ("direct" or "notary:<name>").
func (k *ServerKeys) StoredKeys(source string) []StoredKey {
	out := make([]StoredKey, 0, len(k.VerifyKeys)+len(k.OldVerifyKeys))
	valid := k.EffectiveValidUntilTS()
	for id, pub := range k.VerifyKeys {
		out = append(out, StoredKey{ServerName: k.ServerName, KeyID: id, PublicKey: pub,
			ValidUntilTS: valid, FetchedTS: k.FetchedTS, Source: source})
	}
	for id, old := range k.OldVerifyKeys {
		if _, current := k.VerifyKeys[id]; current {
			continue
		}
		out = append(out, StoredKey{ServerName: k.ServerName, KeyID: id, PublicKey: old.Public,
			ValidUntilTS: old.ExpiredTS, Expired: true, FetchedTS: k.FetchedTS, Source: source})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].KeyID < out[j].KeyID })
	return out
}
