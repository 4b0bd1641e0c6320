package federation

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
)

type vectorKey struct {
	Seed       string `json:"seed_unpadded_base64"`
	Public     string `json:"public_key_unpadded_base64"`
	ServerName string `json:"server_name"`
	KeyID      string `json:"key_id"`
}

type vectorFile struct {
	Keys    map[string]vectorKey `json:"keys"`
	Vectors []json.RawMessage    `json:"vectors"`
}

func loadVectors(t testing.TB, kind string) ([]map[string]json.RawMessage, map[string]vectorKey) {
	t.Helper()
	data, err := os.ReadFile("../testdata/testvectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	var out []map[string]json.RawMessage
	for _, raw := range f.Vectors {
		var v map[string]json.RawMessage
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		var k string
		_ = json.Unmarshal(v["kind"], &k)
		if k == kind {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no vectors of kind %s", kind)
	}
	return out, f.Keys
}

func vectorSigningKey(t testing.TB, k vectorKey) rooms.SigningKey {
	t.Helper()
	seed, err := rooms.DecodeBase64(k.Seed)
	if err != nil {
		t.Fatal(err)
	}
	return rooms.SigningKey{ServerName: k.ServerName, KeyID: k.KeyID, Private: ed25519.NewKeyFromSeed(seed)}
}

func str(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestXMatrix_Vectors(t *testing.T) {
	vectors, keyset := loadVectors(t, "x_matrix_request")
	for _, v := range vectors {
		id := str(t, v["id"])
		t.Run(id, func(t *testing.T) {
			key := vectorSigningKey(t, keyset[str(t, v["key"])])
			method, uri := str(t, v["method"]), str(t, v["uri"])
			origin, dest := str(t, v["origin"]), str(t, v["destination"])
			var content any
			if raw, ok := v["content_raw"]; ok {
				parsed, err := rooms.ParseJSON([]byte(str(t, raw)))
				if err != nil {
					t.Fatal(err)
				}
				content = parsed
			}
			if origin != key.ServerName {
				t.Fatalf("vector origin %s, key for %s", origin, key.ServerName)
			}

			// Parse the header exactly as captured and verify it.
			x, err := ParseXMatrix(str(t, v["expected_authorization"]))
			if err != nil {
				t.Fatal(err)
			}
			if x.Origin != origin || x.Destination != dest || x.KeyID != key.KeyID || x.Signature != str(t, v["expected_sig"]) {
				t.Fatalf("parsed %+v", x)
			}
			if err := VerifyRequest(x, x.Destination, method, uri, content, key.PublicKey()); err != nil {
				t.Fatal(err)
			}

			// Our signer must produce the same signature.
			signed, err := SignRequest(key, dest, method, uri, content)
			if err != nil {
				t.Fatal(err)
			}
			if signed.Signature != str(t, v["expected_sig"]) {
				t.Fatalf("signature %s, want %s", signed.Signature, str(t, v["expected_sig"]))
			}

			// Any change to what is signed breaks verification.
			if err := VerifyRequest(x, x.Destination, method, uri+"x", content, key.PublicKey()); !errors.Is(err, ErrBadXMatrix) {
				t.Fatalf("altered uri verified: %v", err)
			}
			if err := VerifyRequest(x, "other.example", method, uri, content, key.PublicKey()); !errors.Is(err, ErrBadXMatrix) {
				t.Fatalf("altered destination verified: %v", err)
			}
			if err := VerifyRequest(x, x.Destination, "POST", uri, content, key.PublicKey()); !errors.Is(err, ErrBadXMatrix) {
				t.Fatalf("altered method verified: %v", err)
			}
			if err := VerifyRequest(x, x.Destination, method, uri, map[string]any{"x": int64(1)}, key.PublicKey()); !errors.Is(err, ErrBadXMatrix) {
				t.Fatalf("altered content verified: %v", err)
			}
		})
	}
}

func TestParseXMatrix_Lenient(t *testing.T) {
	want := XMatrix{Origin: "origin.example:8448", Destination: "dest.example", KeyID: "ed25519:a_B1", Signature: "ab+/cd"}
	accepted := []string{
		`X-Matrix origin="origin.example:8448",destination="dest.example",key="ed25519:a_B1",sig="ab+/cd"`,
		`x-matrix   origin=origin.example:8448 , destination=dest.example,key=ed25519:a_B1,sig=ab+/cd`,
		"X-Matrix\tORIGIN = \"origin.example:8448\",\tDestination=\"dest.example\" ,KEY=\"ed25519:a_B1\",SIG=\"ab+/cd\"",
		`X-Matrix sig="ab+/cd",key="ed25519:a_B1",unknown="x, y",destination="dest.example",origin="origin.example:8448"`,
		`X-Matrix origin="origin\.example:8448",destination="dest.example",key="ed25519:a_B1",sig="ab\+/cd",`,
		`X-Matrix ,origin="origin.example:8448",,destination="dest.example",key="ed25519:a_B1",sig="ab+/cd"`,
	}
	for _, h := range accepted {
		got, err := ParseXMatrix(h)
		if err != nil {
			t.Errorf("ParseXMatrix(%s): %v", h, err)
			continue
		}
		if got != want {
			t.Errorf("ParseXMatrix(%s) = %+v", h, got)
		}
	}

	noDest, err := ParseXMatrix(`X-Matrix origin=a.example,key="ed25519:1",sig="x"`)
	if err != nil || noDest.Destination != "" || noDest.Origin != "a.example" {
		t.Fatalf("header without destination: %+v, %v", noDest, err)
	}

	rejected := map[string]string{
		"empty":              ``,
		"other scheme":       `Bearer abc`,
		"no params":          `X-Matrix`,
		"no space":           `X-Matrixorigin="a",key="ed25519:1",sig="x"`,
		"missing origin":     `X-Matrix key="ed25519:1",sig="x"`,
		"missing key":        `X-Matrix origin="a.example",sig="x"`,
		"missing sig":        `X-Matrix origin="a.example",key="ed25519:1"`,
		"empty sig":          `X-Matrix origin="a.example",key="ed25519:1",sig=""`,
		"duplicate origin":   `X-Matrix origin="a.example",origin="b.example",key="ed25519:1",sig="x"`,
		"unterminated quote": `X-Matrix origin="a.example,key="ed25519:1",sig="x`,
		"bad origin":         `X-Matrix origin="a b",key="ed25519:1",sig="x"`,
		"bad destination":    `X-Matrix origin="a.example",destination="[x]",key="ed25519:1",sig="x"`,
		"no equals":          `X-Matrix origin "a.example",key="ed25519:1",sig="x"`,
		"junk after value":   `X-Matrix origin="a.example" junk,key="ed25519:1",sig="x"`,
		"trailing backslash": `X-Matrix origin="a.example",key="ed25519:1",sig="x\`,
		"too long":           `X-Matrix origin="a.example",key="ed25519:1",sig="` + strings.Repeat("x", maxAuthorizationLen) + `"`,
	}
	for name, h := range rejected {
		if got, err := ParseXMatrix(h); !errors.Is(err, ErrBadXMatrix) {
			t.Errorf("%s: ParseXMatrix(%q) = %+v, %v; want ErrBadXMatrix", name, h, got, err)
		}
	}
}

// TestXMatrix_SignVerifyProperty: for random methods, URIs and bodies, the
// header our signer produces formats, parses back and verifies with our
// verifier, and fails for any other URI.
func TestXMatrix_SignVerifyProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	key := rooms.SigningKey{ServerName: "origin.example:8448", KeyID: "ed25519:k1", Private: priv}
	methods := []string{"GET", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"}
	const uriChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~%!$&'()*+,;=:@/?#"
	randString := func(n int, alphabet string) string {
		runes := []rune(alphabet)
		b := make([]rune, n)
		for i := range b {
			b[i] = runes[rng.IntN(len(runes))]
		}
		return string(b)
	}
	var randValue func(depth int) any
	randValue = func(depth int) any {
		switch k := rng.IntN(7); {
		case k == 0 && depth < 4:
			m := map[string]any{}
			for range rng.IntN(4) {
				m[randString(rng.IntN(6), "abcé\u2028\"\\\n xyz")] = randValue(depth + 1)
			}
			return m
		case k == 1 && depth < 4:
			var a []any
			for range rng.IntN(4) {
				a = append(a, randValue(depth+1))
			}
			if a == nil {
				a = []any{}
			}
			return a
		case k == 2:
			return rng.Int64N(2*rooms.MaxSafeInteger) - rooms.MaxSafeInteger
		case k == 3:
			return rng.IntN(2) == 0
		case k == 4:
			return nil
		default:
			return randString(rng.IntN(12), "ab\x00\x1f\u00e9\U0001F600\"\\/<>&")
		}
	}
	for i := range 300 {
		method := methods[rng.IntN(len(methods))]
		uri := "/_matrix/federation/v1/" + randString(1+rng.IntN(40), uriChars)
		var content any
		if rng.IntN(3) > 0 {
			obj := map[string]any{}
			for range rng.IntN(5) {
				obj[randString(1+rng.IntN(5), "abcdef")] = randValue(0)
			}
			content = obj
		}
		// Round-trip the body through canonical bytes, as it travels.
		if content != nil {
			raw, err := rooms.EncodeCanonical(content)
			if err != nil {
				t.Fatal(err)
			}
			if content, err = rooms.ParseJSON(raw); err != nil {
				t.Fatal(err)
			}
		}
		x, err := SignRequest(key, "dest.example", method, uri, content)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := ParseXMatrix(x.String())
		if err != nil {
			t.Fatalf("case %d: parse %s: %v", i, x, err)
		}
		if parsed != x {
			t.Fatalf("case %d: parsed %+v, signed %+v", i, parsed, x)
		}
		if err := VerifyRequest(parsed, "dest.example", method, uri, content, key.PublicKey()); err != nil {
			t.Fatalf("case %d: %s %s: %v", i, method, uri, err)
		}
		if err := VerifyRequest(parsed, "dest.example", method, uri+"/", content, key.PublicKey()); err == nil {
			t.Fatalf("case %d: verified against another URI", i)
		}
	}
}

// FuzzParseXMatrix checks that the parser never panics and that whatever
// it accepts formats to a header that parses back to the same value.
func FuzzParseXMatrix(f *testing.F) {
	for _, seed := range []string{
		`X-Matrix origin="localhost:8800",key="ed25519:a_Obwu",sig="7vt4vP/w8zYB3Zg77nuTPwie3TxEy2OHZQMsSa4nsXZzL4/qw+DguXbyMy3BF77XvSJmBt+Gw+fU6T4HId7fBg",destination="localhost:44033"`,
		`X-Matrix origin=a.example,destination=b.example,key=ed25519:1,sig=abc`,
		`x-matrix  ORIGIN = "a\"b" , key="k",sig="s"`,
		`X-Matrix origin="[::1]:8448",key="ed25519:1",sig="s",extra`,
		`X-Matrix "`, `X-Matrix =`, `X-Matrix a=`, `X-Matrix a="\`, "X-Matrix \t,,,", `X-Matrix origin=a,origin=a`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, h string) {
		x, err := ParseXMatrix(h)
		if err != nil {
			if !errors.Is(err, ErrBadXMatrix) {
				t.Fatalf("error %v does not match ErrBadXMatrix", err)
			}
			return
		}
		if x.Origin == "" || x.KeyID == "" || x.Signature == "" {
			t.Fatalf("accepted %q with empty required field: %+v", h, x)
		}
		if strings.ContainsAny(x.KeyID+x.Signature, "\"\\") {
			// Values with quotes or backslashes cannot be written back
			// without escapes; nothing further to check.
			return
		}
		again, err := ParseXMatrix(x.String())
		if err != nil || again != x {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", h, x, x.String(), again, err)
		}
	})
}
