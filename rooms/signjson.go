package rooms

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// ErrNoSignature is matched when an object carries no usable signature from
// the entity being checked.
var ErrNoSignature = errors.New("no signature from entity")

// ErrBadSignature is matched when a signature is present but does not verify.
var ErrBadSignature = errors.New("signature does not verify")

// SigningKey is one of our ed25519 keys and the name it signs for.
type SigningKey struct {
	ServerName string             // the entity the signature is filed under
	KeyID      string             // "ed25519:<version>"
	Private    ed25519.PrivateKey // 64-byte private key
}

// PublicKey returns the key's public half.
func (k SigningKey) PublicKey() ed25519.PublicKey {
	return k.Private.Public().(ed25519.PublicKey)
}

// signingBytes returns the canonical bytes that a JSON signature covers: the
// object without "signatures" and "unsigned".
func signingBytes(obj map[string]any) ([]byte, error) {
	return appendCanonicalFiltered(make([]byte, 0, 512), obj, signatureCovers)
}

// signatureCovers reports whether a top-level key is covered by a JSON
// signature.
func signatureCovers(key string) bool {
	return key != "signatures" && key != "unsigned"
}

// SignJSON signs obj in place as the spec's "Signing JSON" appendix says: the
// signature covers obj minus signatures and unsigned and is added under
// signatures[key.ServerName][key.KeyID], keeping any other signatures.
func SignJSON(obj map[string]any, key SigningKey) error {
	msg, err := signingBytes(obj)
	if err != nil {
		return fmt.Errorf("sign JSON: %w", err)
	}
	sig := EncodeBase64(ed25519.Sign(key.Private, msg))
	addSignature(obj, key.ServerName, key.KeyID, sig)
	return nil
}

func addSignature(obj map[string]any, entity, keyID, sig string) {
	sigs, _ := obj["signatures"].(map[string]any)
	newSigs := make(map[string]any, len(sigs)+1)
	for k, v := range sigs {
		newSigs[k] = v
	}
	entitySigs, _ := newSigs[entity].(map[string]any)
	newEntity := make(map[string]any, len(entitySigs)+1)
	for k, v := range entitySigs {
		newEntity[k] = v
	}
	newEntity[keyID] = sig
	newSigs[entity] = newEntity
	obj["signatures"] = newSigs
}

// SignJSONBytes parses raw strictly, signs it and returns canonical bytes.
func SignJSONBytes(raw []byte, key SigningKey) ([]byte, error) {
	v, err := ParseJSON(raw)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("sign JSON: top level is not an object")
	}
	if err := SignJSON(obj, key); err != nil {
		return nil, err
	}
	return EncodeCanonical(obj)
}

// Signatures returns the key IDs and base64 signatures obj carries for
// entity. Entries that are not strings are skipped.
func Signatures(obj map[string]any, entity string) map[string]string {
	sigs, _ := obj["signatures"].(map[string]any)
	entitySigs, _ := sigs[entity].(map[string]any)
	out := make(map[string]string, len(entitySigs))
	for keyID, s := range entitySigs {
		if str, ok := s.(string); ok {
			out[keyID] = str
		}
	}
	return out
}

// VerifyJSONSignature checks the signature obj carries from entity under
// keyID against pub.
func VerifyJSONSignature(obj map[string]any, entity, keyID string, pub ed25519.PublicKey) error {
	sigB64, ok := Signatures(obj, entity)[keyID]
	if !ok {
		return fmt.Errorf("%w %s with key %s", ErrNoSignature, entity, keyID)
	}
	// The bytes are only needed until verified: a request's (a whole
	// /send body, 50 KB or more) is encoded into a reused buffer rather
	// than one grown afresh for each request.
	buf := verifyBuffers.Get().(*[]byte)
	defer func() {
		if cap(*buf) <= maxPooledVerifyBuffer {
			verifyBuffers.Put(buf)
		}
	}()
	msg, err := appendCanonicalFiltered((*buf)[:0], obj, signatureCovers)
	*buf = msg
	if err != nil {
		return fmt.Errorf("verify JSON: %w", err)
	}
	return verifySignatureBytes(msg, entity, keyID, sigB64, pub)
}

// verifyBuffers holds buffers for the bytes VerifyJSONSignature checks.
var verifyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledVerifyBuffer bounds the buffers kept for reuse, so that one
// huge request does not stay in memory.
const maxPooledVerifyBuffer = 1 << 20

// IsEd25519KeyID reports whether keyID names an ed25519 key, the only
// algorithm Matrix server keys use; signatures under other algorithms are
// ignored by verifiers.
func IsEd25519KeyID(keyID string) bool {
	return strings.HasPrefix(keyID, "ed25519:") && len(keyID) > len("ed25519:")
}
