package keys

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
)

func TestLoadOrGenerate_CreatesThenReuses(t *testing.T) {
	dir := t.TempDir()
	first, created, err := LoadOrGenerate(dir, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !created || len(first.Current) != 1 || len(first.Old) != 0 {
		t.Fatalf("first start: created=%v own=%+v", created, first)
	}
	path := filepath.Join(dir, SigningKeyFile)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", info.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !regexp.MustCompile(`^ed25519 a_[A-Za-z0-9]{4} [A-Za-z0-9+/]{43}\n$`).Match(data) {
		t.Errorf("key file %q is not in Synapse's format", data)
	}

	second, created, err := LoadOrGenerate(dir, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Error("second start generated a new key")
	}
	if second.Current[0].KeyID() != first.Current[0].KeyID() || !second.Current[0].Public().Equal(first.Current[0].Public()) {
		t.Errorf("key changed across restarts: %v then %v", first.Current[0], second.Current[0])
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only %s", len(entries), SigningKeyFile)
	}
}

func TestLoadOrGenerate_RefusesCorruptFile(t *testing.T) {
	tests := map[string]string{
		"empty":            "",
		"garbage":          "this is not a key\n",
		"wrong algorithm":  "curve25519 a_abcd QJvXAPj0D9MUb1exkD8pIWmCvT1xajlsB8jRYz/G5HE\n",
		"short seed":       "ed25519 a_abcd QJvXAPj0D9MUb1exkD8pIW\n",
		"not base64":       "ed25519 a_abcd !!!!\n",
		"bad version":      "ed25519 a-b QJvXAPj0D9MUb1exkD8pIWmCvT1xajlsB8jRYz/G5HE\n",
		"duplicate":        "ed25519 a_1 QJvXAPj0D9MUb1exkD8pIWmCvT1xajlsB8jRYz/G5HE\ned25519 a_1 QJvXAPj0D9MUb1exkD8pIWmCvT1xajlsB8jRYz/G5HE\n",
		"extra field":      "ed25519 a_abcd QJvXAPj0D9MUb1exkD8pIWmCvT1xajlsB8jRYz/G5HE x\n",
		"truncated binary": "\x00\x01\x02",
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, SigningKeyFile)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadOrGenerate(dir, rand.Reader)
			if !errors.Is(err, ErrCorruptKeyFile) {
				t.Fatalf("error = %v, want ErrCorruptKeyFile", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(after, []byte(content)) {
				t.Error("corrupt key file was modified")
			}
		})
	}
}

// TestParseKeyFile_Synapse reads a key in the format Synapse writes (the
// seed of the gmsl_sytest vector key) and checks the derived public key.
func TestParseKeyFile_Synapse(t *testing.T) {
	keys, err := ParseKeyFile([]byte("ed25519 a_Obwu QJvXAPj0D9MUb1exkD8pIWmCvT1xajlsB8jRYz/G5HE\n\ned25519 auto 2OjO919uwYS3oMP7tR/g+In9i9M1dXaYg9z+0DRP7q0="))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].KeyID() != "ed25519:a_Obwu" || keys[1].KeyID() != "ed25519:auto" {
		t.Fatalf("keys = %v", keys)
	}
	if got := rooms.EncodeBase64(keys[0].Public()); got != "2UwTWD4+tgTgENV7znGGNqhAOGY+BW1mRAnC6W6FBQg" {
		t.Errorf("public key %s", got)
	}
	if got := FormatKeyFile(keys[0]); string(got) != "ed25519 a_Obwu QJvXAPj0D9MUb1exkD8pIWmCvT1xajlsB8jRYz/G5HE\n" {
		t.Errorf("FormatKeyFile = %q", got)
	}
	if s := keys[0].String(); strings.Contains(s, "QJvXAPj0") {
		t.Errorf("String() leaks the seed: %s", s)
	}
}

func TestLoadOrGenerate_OldKeys(t *testing.T) {
	dir := t.TempDir()
	own, _, err := LoadOrGenerate(dir, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	oldPub, _, _ := ed25519.GenerateKey(rand.Reader)
	content := "# retired 2026-01-01\ned25519 old1 " + rooms.EncodeBase64(oldPub) + " 1767225600000\n"
	if err := os.WriteFile(filepath.Join(dir, OldSigningKeysFile), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	again, _, err := LoadOrGenerate(dir, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Old) != 1 || again.Old[0].KeyID != "ed25519:old1" || again.Old[0].ExpiredTS != 1767225600000 || !again.Old[0].Public.Equal(oldPub) {
		t.Errorf("old keys = %+v", again.Old)
	}

	// A current key listed as old is a rotation done halfway.
	clash := "ed25519 " + own.Current[0].Version() + " " + rooms.EncodeBase64(own.Current[0].Public()) + " 1\n"
	if err := os.WriteFile(filepath.Join(dir, OldSigningKeysFile), []byte(clash), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrGenerate(dir, rand.Reader); !errors.Is(err, ErrCorruptKeyFile) {
		t.Errorf("clash: error = %v, want ErrCorruptKeyFile", err)
	}
}

func TestParseOldKeysFile_Errors(t *testing.T) {
	for _, content := range []string{
		"ed25519 old1 AAAA 1\n",
		"ed25519 old1 " + strings.Repeat("A", 43) + " yesterday\n",
		"ed25519 old1 " + strings.Repeat("A", 43) + "\n",
		"ed25519 old-1 " + strings.Repeat("A", 43) + " 5\n",
		"ed25519 old1 " + strings.Repeat("A", 43) + " -5\n",
	} {
		if _, err := ParseOldKeysFile([]byte(content)); !errors.Is(err, ErrCorruptKeyFile) {
			t.Errorf("%q: error = %v", content, err)
		}
	}
}

func TestGenerateKey_Distinct(t *testing.T) {
	a, err := GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if a.Public().Equal(b.Public()) {
		t.Error("two generated keys are equal")
	}
	if _, err := GenerateKey(bytes.NewReader(nil)); err == nil {
		t.Error("GenerateKey with an empty random source succeeded")
	}
}
