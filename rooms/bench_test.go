package rooms

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"
)

// staticKeys is a KeyLookup over a fixed map, ignoring validity.
type staticKeys map[string]map[string]ed25519.PublicKey

func (k staticKeys) VerifyKey(server, keyID string, ts int64) (ed25519.PublicKey, error) {
	pub, ok := k[server][keyID]
	if !ok {
		return nil, fmt.Errorf("no key %s for %s", keyID, server)
	}
	return pub, nil
}

// testKey returns a deterministic signing key for server.
func testKey(server string) SigningKey {
	seed := sha256.Sum256([]byte("ferry test key " + server))
	return SigningKey{ServerName: server, KeyID: "ed25519:t1", Private: ed25519.NewKeyFromSeed(seed[:])}
}

func keysFor(ks ...SigningKey) staticKeys {
	out := staticKeys{}
	for _, k := range ks {
		if out[k.ServerName] == nil {
			out[k.ServerName] = map[string]ed25519.PublicKey{}
		}
		out[k.ServerName][k.KeyID] = k.PublicKey()
	}
	return out
}

// benchMessage builds a signed m.room.message of about 700 bytes in
// canonical JSON, as a typical PDU on the wire.
func benchMessage(tb testing.TB, v Version) []byte {
	tb.Helper()
	key := testKey("example.org")
	roomID := "!kHSJdhsjKdsfjhAbc:example.org"
	if v.RoomIDs == RoomIDFromCreate {
		roomID = "!" + sampleHashID
	}
	ev, err := BuildEvent(v, EventTemplate{
		Type:   "m.room.message",
		Sender: "@alice:example.org",
		RoomID: roomID,
		Content: map[string]any{
			"msgtype": "m.text",
			"body":    "Here is a message of ordinary length, a couple of sentences, as people write them. " + strings.Repeat("Lorem ipsum dolor sit amet. ", 3),
			"m.mentions": map[string]any{
				"user_ids": []any{"@bob:example.com"},
			},
		},
		PrevEvents:     []string{"$4FbpZrgPQTwoLD9H5y7jcikucCypUOn78mXhQX7WliY"},
		AuthEvents:     []string{"$gbHO7IPUHybc7ULFnT7P0r3iWlZFHGmr6zBfEYCUyKw", "$hy1eZFYcgNxMFNNBgCD5fyOzyWRcBkxfNcrUI5ZpZlE", "$Nt_z68EwFfPqBeHjzEHGsp461Z4EfNEzR-KH5bOYdOY"},
		Depth:          24,
		OriginServerTS: 1731769874137,
	}, key)
	if err != nil {
		tb.Fatal(err)
	}
	obj := ev.Object()
	obj["unsigned"] = map[string]any{"age_ts": int64(1731769874137)}
	raw, err := EncodeCanonical(obj)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

// BenchmarkVerifyPDU is the whole receive-side check of one PDU: strict
// parse, format checks, reference hash (event ID), redaction, one ed25519
// signature and the content hash.
func BenchmarkVerifyPDU(b *testing.B) {
	for _, id := range SupportedVersionIDs() {
		v := mustVersion(b, id)
		raw := benchMessage(b, v)
		keys := keysFor(testKey("example.org"))
		b.Run("v"+id, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				ev, err := ParseEvent(v, raw)
				if err != nil {
					b.Fatal(err)
				}
				checked, err := CheckEvent(ev, keys)
				if err != nil || checked != ev {
					b.Fatalf("check: %v", err)
				}
			}
		})
	}
}

// BenchmarkEd25519Verify is one bare ed25519 verification of a message the
// size of a redacted event, the unit BenchmarkVerifyPDU is measured in.
func BenchmarkEd25519Verify(b *testing.B) {
	key := testKey("example.org")
	msg := []byte(strings.Repeat("x", 400))
	sig := ed25519.Sign(key.Private, msg)
	pub := key.PublicKey()
	b.ReportAllocs()
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify failed")
		}
	}
}

// BenchmarkVerifyPDURatio alternates one whole PDU check with one bare
// ed25519 verification and reports their cost ratio (x-ed25519), which a
// busy machine disturbs far less than two separate benchmarks.
func BenchmarkVerifyPDURatio(b *testing.B) {
	for _, id := range SupportedVersionIDs() {
		v := mustVersion(b, id)
		raw := benchMessage(b, v)
		key := testKey("example.org")
		keys := keysFor(key)
		msg := []byte(strings.Repeat("x", 400))
		sig := ed25519.Sign(key.Private, msg)
		pub := key.PublicKey()
		b.Run("v"+id, func(b *testing.B) {
			var pdu, bare time.Duration
			n := 0
			for b.Loop() {
				start := time.Now()
				ev, err := ParseEvent(v, raw)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := CheckEvent(ev, keys); err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				if !ed25519.Verify(pub, msg, sig) {
					b.Fatal("verify failed")
				}
				pdu += mid.Sub(start)
				bare += time.Since(mid)
				n++
			}
			b.ReportMetric(float64(pdu.Nanoseconds())/float64(n), "pdu-ns/op")
			b.ReportMetric(float64(bare.Nanoseconds())/float64(n), "ed25519-ns/op")
			b.ReportMetric(float64(pdu)/float64(bare), "x-ed25519")
		})
	}
}

func BenchmarkParseJSON(b *testing.B) {
	raw := benchMessage(b, mustVersion(b, "10"))
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := ParseJSON(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeCanonical(b *testing.B) {
	raw := benchMessage(b, mustVersion(b, "10"))
	tree, err := ParseJSON(raw)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := EncodeCanonical(tree); err != nil {
			b.Fatal(err)
		}
	}
}
