package keys

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
)

// serverKeyVector is the server_key_response entry of the shared vectors.
func serverKeyVector(t *testing.T) (response []byte, seed, public, keyID, server string) {
	t.Helper()
	data, err := os.ReadFile("../testdata/testvectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Keys map[string]struct {
			Seed       string `json:"seed_unpadded_base64"`
			Public     string `json:"public_key_unpadded_base64"`
			ServerName string `json:"server_name"`
			KeyID      string `json:"key_id"`
		} `json:"keys"`
		Vectors []struct {
			Kind     string          `json:"kind"`
			Key      string          `json:"key"`
			Response json.RawMessage `json:"response"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	for _, v := range f.Vectors {
		if v.Kind == "server_key_response" {
			k := f.Keys[v.Key]
			return v.Response, k.Seed, k.Public, k.KeyID, k.ServerName
		}
	}
	t.Fatal("no server_key_response vector")
	return
}

func TestParseServerKeys_Vector(t *testing.T) {
	raw, seed, public, keyID, server := serverKeyVector(t)
	const fetched = 1493000000000
	keys, err := ParseServerKeys(raw, server, fetched)
	if err != nil {
		t.Fatal(err)
	}
	seedBytes, _ := rooms.DecodeBase64(seed)
	own, err := NewPrivateKey(strings.TrimPrefix(keyID, "ed25519:"), seedBytes)
	if err != nil {
		t.Fatal(err)
	}
	if got := keys.VerifyKeys[keyID]; !got.Equal(own.Public()) || rooms.EncodeBase64(got) != public {
		t.Errorf("verify key %s = %s, want %s derived from the seed", keyID, rooms.EncodeBase64(got), public)
	}
	old := keys.OldVerifyKeys["ed25519:old"]
	if old.ExpiredTS != 929059200 || rooms.EncodeBase64(old.Public) != "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik" {
		t.Errorf("old key = %+v", old)
	}
	if keys.ValidUntilTS != 1493142432964 || keys.EffectiveValidUntilTS() != 1493142432964 {
		t.Errorf("valid until %d, effective %d", keys.ValidUntilTS, keys.EffectiveValidUntilTS())
	}

	stored := keys.StoredKeys("direct")
	if len(stored) != 2 || stored[0].KeyID != "ed25519:a_Obwu" || stored[0].Expired ||
		stored[1].KeyID != "ed25519:old" || !stored[1].Expired || stored[1].ValidUntilTS != 929059200 ||
		stored[0].Source != "direct" || stored[0].FetchedTS != fetched {
		t.Errorf("stored keys = %+v", stored)
	}

	// The legacy tls_fingerprints field is covered by the signature.
	tampered := strings.Replace(string(raw), "I2ohBnqpb5m3", "J2ohBnqpb5m3", 1)
	if _, err := ParseServerKeys([]byte(tampered), server, fetched); !errors.Is(err, rooms.ErrBadSignature) || !errors.Is(err, ErrInvalidServerKeys) {
		t.Errorf("tampered document: error = %v", err)
	}
	if _, err := ParseServerKeys(raw, "localhost:8801", fetched); !errors.Is(err, ErrInvalidServerKeys) {
		t.Errorf("wrong server: error = %v", err)
	}
}

func testOwn(t *testing.T, current int) *Own {
	t.Helper()
	own := &Own{}
	for range current {
		k, err := GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		own.Current = append(own.Current, k)
	}
	oldKey, _ := GenerateKey(rand.Reader)
	own.Old = []OldKey{{KeyID: "ed25519:retired", Public: oldKey.Public(), ExpiredTS: 1000}}
	return own
}

func TestServerKeyDocument_RoundTrip(t *testing.T) {
	own := testOwn(t, 2)
	const now = 1_800_000_000_000
	doc, err := ServerKeyDocument("hs1.test:8448", own, now+24*3600*1000)
	if err != nil {
		t.Fatal(err)
	}
	if canon, err := rooms.CanonicalJSON(doc); err != nil || string(canon) != string(doc) {
		t.Errorf("document is not canonical JSON: %v", err)
	}
	keys, err := ParseServerKeys(doc, "hs1.test:8448", now)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range own.Current {
		if !keys.VerifyKeys[k.KeyID()].Equal(k.Public()) {
			t.Errorf("key %s missing from the document", k.KeyID())
		}
	}
	if old := keys.OldVerifyKeys["ed25519:retired"]; old.ExpiredTS != 1000 || !old.Public.Equal(own.Old[0].Public) {
		t.Errorf("old key = %+v", old)
	}
	if got := keys.EffectiveValidUntilTS(); got != now+24*3600*1000 {
		t.Errorf("effective validity %d", got)
	}

	// A document valid for a year is trusted for 7 days from fetch.
	long, _ := ServerKeyDocument("hs1.test:8448", own, now+365*24*3600*1000)
	keys, err = ParseServerKeys(long, "hs1.test:8448", now)
	if err != nil {
		t.Fatal(err)
	}
	if got := keys.EffectiveValidUntilTS(); got != now+MaxValidityMS {
		t.Errorf("effective validity %d, want fetch + 7 days", got)
	}
}

// TestParseServerKeys_Rejects edits a valid document and re-signs it with
// the keys it was signed with, so each case fails for its own reason.
func TestParseServerKeys_Rejects(t *testing.T) {
	own := testOwn(t, 2)
	sign := func(t *testing.T, obj map[string]any, signers ...PrivateKey) []byte {
		t.Helper()
		delete(obj, "signatures")
		for _, k := range signers {
			if err := rooms.SignJSON(obj, k.SigningKey("hs1.test")); err != nil {
				t.Fatal(err)
			}
		}
		out, err := rooms.EncodeCanonical(obj)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	base := func(t *testing.T) map[string]any {
		doc, err := ServerKeyDocument("hs1.test", own, 5000)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := rooms.ParseJSON(doc)
		return v.(map[string]any)
	}
	tests := []struct {
		name string
		doc  func(t *testing.T) []byte
		want string
	}{
		{"not JSON", func(t *testing.T) []byte { return []byte("{") }, "invalid server key document"},
		{"not an object", func(t *testing.T) []byte { return []byte("[]") }, "not a JSON object"},
		{"other server", func(t *testing.T) []byte {
			o := base(t)
			o["server_name"] = "evil.test"
			return sign(t, o, own.Current...)
		}, `server_name is "evil.test"`},
		{"no valid_until_ts", func(t *testing.T) []byte {
			o := base(t)
			delete(o, "valid_until_ts")
			return sign(t, o, own.Current...)
		}, "valid_until_ts is missing"},
		{"no verify_keys", func(t *testing.T) []byte {
			o := base(t)
			o["verify_keys"] = map[string]any{"curve:x": map[string]any{"key": "AAAA"}}
			return sign(t, o, own.Current...)
		}, "no ed25519 key in verify_keys"},
		{"short key", func(t *testing.T) []byte {
			o := base(t)
			o["verify_keys"].(map[string]any)["ed25519:short"] = map[string]any{"key": "AAAA"}
			return sign(t, o, own.Current...)
		}, "verify_keys[ed25519:short]: key is not 32 bytes"},
		{"old key without expired_ts", func(t *testing.T) []byte {
			o := base(t)
			delete(o["old_verify_keys"].(map[string]any)["ed25519:retired"].(map[string]any), "expired_ts")
			return sign(t, o, own.Current...)
		}, "expired_ts is missing"},
		{"signed by one of two keys", func(t *testing.T) []byte {
			return sign(t, base(t), own.Current[0])
		}, "no signature from entity"},
		{"unsigned", func(t *testing.T) []byte {
			return sign(t, base(t))
		}, "self-signature"},
		{"extra key not signing", func(t *testing.T) []byte {
			o := base(t)
			stranger, _ := GenerateKey(rand.Reader)
			o["verify_keys"].(map[string]any)[stranger.KeyID()] = map[string]any{"key": rooms.EncodeBase64(stranger.Public())}
			return sign(t, o, own.Current...)
		}, "no signature from entity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseServerKeys(tt.doc(t), "hs1.test", 0)
			if !errors.Is(err, ErrInvalidServerKeys) {
				t.Fatalf("error = %v, want ErrInvalidServerKeys", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestServerKeyDocument_NoKey(t *testing.T) {
	if _, err := ServerKeyDocument("hs1.test", &Own{}, 1); err == nil {
		t.Error("document without keys built")
	}
}
