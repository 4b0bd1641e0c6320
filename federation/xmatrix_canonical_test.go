package federation

import (
	"crypto/ed25519"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
)

// TestSignRequestCanonical: a signature written around canonical body
// bytes is the one SignRequest makes from the parsed body, and it
// verifies; a body that is not canonical gets a signature that does not.
func TestSignRequestCanonical(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	key := rooms.SigningKey{ServerName: "origin.test", KeyID: "ed25519:a", Private: priv}
	const uri = "/_matrix/federation/v1/send/17.3"
	raw := []byte(`{"edus":[{"content":{"typing":true,"user_id":"@u:origin.test"},"edu_type":"m.typing"}],"origin":"origin.test","origin_server_ts":17,"pdus":[{"body":"é <&> \"q\"","n":-3}]}`)
	content, err := rooms.ParseJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	if canon, err := rooms.EncodeCanonical(content); err != nil || string(canon) != string(raw) {
		t.Fatalf("the test body is not canonical: %s, %v", canon, err)
	}
	want, err := SignRequest(key, "dest.test", "PUT", uri, content)
	if err != nil {
		t.Fatal(err)
	}
	got, err := SignRequestCanonical(key, "dest.test", "PUT", uri, raw)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("canonical signing %+v, parsed signing %+v", got, want)
	}
	if err := VerifyRequest(got, "dest.test", "PUT", uri, content, key.PublicKey()); err != nil {
		t.Fatalf("does not verify: %v", err)
	}
	spaced := []byte(`{"origin": "origin.test"}`)
	bad, err := SignRequestCanonical(key, "dest.test", "PUT", uri, spaced)
	if err != nil {
		t.Fatal(err)
	}
	parsed, _ := rooms.ParseJSON(spaced)
	if VerifyRequest(bad, "dest.test", "PUT", uri, parsed, key.PublicKey()) == nil {
		t.Fatal("a signature over a body that is not canonical verified")
	}
	if _, err := SignRequestCanonical(key, "dest.test", "PUT", "/\xff", raw); err == nil {
		t.Fatal("a URI that is not UTF-8 was signed")
	}
}
