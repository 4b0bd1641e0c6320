package rooms

import (
	"crypto/ed25519"
	"encoding/json"
	"os"
	"testing"
)

// testVector is one entry of testdata/testvectors.json; fields are filled
// per kind, and tests read only what their kind defines.
type testVector struct {
	ID                string                     `json:"id"`
	Kind              string                     `json:"kind"`
	InputJSONText     string                     `json:"input_json_text"`
	InputUTF8         string                     `json:"input_utf8"`
	ExpectedCanonical string                     `json:"expected_canonical"`
	Expected          json.RawMessage            `json:"expected"`
	Key               string                     `json:"key"`
	Input             json.RawMessage            `json:"input"`
	ExpectedSigned    json.RawMessage            `json:"expected_signed"`
	RedactionRules    string                     `json:"redaction_rules"`
	RoomVersion       string                     `json:"room_version"`
	ExpectedByVersion map[string]json.RawMessage `json:"expected_by_room_version"`
	Raw               json.RawMessage            `json:"-"`
}

type vectorKey struct {
	Seed       string `json:"seed_unpadded_base64"`
	Public     string `json:"public_key_unpadded_base64"`
	ServerName string `json:"server_name"`
	KeyID      string `json:"key_id"`
}

type vectorFile struct {
	Keys    map[string]vectorKey `json:"keys"`
	Vectors []json.RawMessage    `json:"vectors"`
	Derived []json.RawMessage    `json:"derived_vectors"`
}

// loadVectors reads the shared test vectors (copied into the repository so
// CI does not depend on anything outside it) and returns those of kind.
func loadVectors(tb testing.TB, kind string) ([]testVector, map[string]vectorKey) {
	tb.Helper()
	data, err := os.ReadFile("../testdata/testvectors.json")
	if err != nil {
		tb.Fatalf("read vectors: %v", err)
	}
	var f vectorFile
	if err := json.Unmarshal(data, &f); err != nil {
		tb.Fatalf("parse vectors: %v", err)
	}
	var out []testVector
	for _, raw := range append(f.Vectors, f.Derived...) {
		var v testVector
		if err := json.Unmarshal(raw, &v); err != nil {
			tb.Fatalf("parse vector: %v", err)
		}
		v.Raw = raw
		if v.Kind == kind {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		tb.Fatalf("no vectors of kind %q", kind)
	}
	return out, f.Keys
}

func signingKeyFromVector(tb testing.TB, k vectorKey) SigningKey {
	tb.Helper()
	seed, err := DecodeBase64(k.Seed)
	if err != nil || len(seed) != ed25519.SeedSize {
		tb.Fatalf("bad seed for %s: %v", k.KeyID, err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if got := EncodeBase64(priv.Public().(ed25519.PublicKey)); k.Public != "" && got != k.Public {
		tb.Fatalf("public key %s, want %s", got, k.Public)
	}
	return SigningKey{ServerName: k.ServerName, KeyID: k.KeyID, Private: priv}
}

func TestVectors_CanonicalJSON(t *testing.T) {
	vectors, _ := loadVectors(t, "canonical_json")
	for _, v := range vectors {
		t.Run(v.ID, func(t *testing.T) {
			tree, err := ParseJSONLenient([]byte(v.InputJSONText))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			got, err := EncodeCanonical(tree)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if string(got) != v.ExpectedCanonical {
				t.Fatalf("got %s\nwant %s", got, v.ExpectedCanonical)
			}
		})
	}
}

func TestVectors_CanonicalJSONStrict(t *testing.T) {
	rejects, _ := loadVectors(t, "canonical_json_strict_reject")
	for _, v := range rejects {
		t.Run(v.ID, func(t *testing.T) {
			if _, err := ParseJSON([]byte(v.InputJSONText)); err == nil {
				t.Fatalf("strict parse accepted %s", v.InputJSONText)
			}
		})
	}
	accepts, _ := loadVectors(t, "canonical_json_strict_accept")
	for _, v := range accepts {
		t.Run(v.ID, func(t *testing.T) {
			if _, err := ParseJSON([]byte(v.InputJSONText)); err != nil {
				t.Fatalf("strict parse rejected %s: %v", v.InputJSONText, err)
			}
		})
	}
}

func TestVectors_UnpaddedBase64(t *testing.T) {
	vectors, _ := loadVectors(t, "unpadded_base64")
	for _, v := range vectors {
		t.Run(v.ID, func(t *testing.T) {
			var want string
			if err := json.Unmarshal(v.Expected, &want); err != nil {
				t.Fatal(err)
			}
			if got := EncodeBase64([]byte(v.InputUTF8)); got != want {
				t.Fatalf("encode %q = %q, want %q", v.InputUTF8, got, want)
			}
			back, err := DecodeBase64(want)
			if err != nil || string(back) != v.InputUTF8 {
				t.Fatalf("decode %q = %q, %v", want, back, err)
			}
		})
	}
}

func TestVectors_JSONSigning(t *testing.T) {
	vectors, keys := loadVectors(t, "json_signing")
	for _, v := range vectors {
		t.Run(v.ID, func(t *testing.T) {
			key := signingKeyFromVector(t, keys[v.Key])
			signed, err := SignJSONBytes(v.Input, key)
			if err != nil {
				t.Fatal(err)
			}
			want, err := CanonicalJSON(v.ExpectedSigned)
			if err != nil {
				t.Fatal(err)
			}
			if string(signed) != string(want) {
				t.Fatalf("got %s\nwant %s", signed, want)
			}
			tree, _ := ParseJSON(signed)
			if err := VerifyJSONSignature(tree.(map[string]any), key.ServerName, key.KeyID, key.PublicKey()); err != nil {
				t.Fatalf("verify own signature: %v", err)
			}
		})
	}
}
