package keys

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ferry-matrix/ferry/rooms"
)

// File names inside the data directory.
const (
	// SigningKeyFile holds our current signing keys, one per line, as
	// "ed25519 <version> <unpadded base64 seed>" (Synapse's format, so a
	// key can move between implementations). The first line is the key
	// Ferry signs events and requests with; every line is published as a
	// verify key and signs the key document.
	SigningKeyFile = "signing.key"
	// OldSigningKeysFile lists retired keys, one per line, as
	// "ed25519 <version> <unpadded base64 public key> <expired_ts>", with
	// expired_ts in milliseconds since the epoch. They are published under
	// old_verify_keys so that events signed before expired_ts still verify.
	//
	// To rotate: append the current key's line here (public key and the
	// time of rotation), delete signing.key, restart. A new key is
	// generated; the old one stays verifiable.
	OldSigningKeysFile = "old_signing.keys"
)

// ErrCorruptKeyFile is matched by errors about a key file that exists but
// cannot be used. Ferry refuses to start rather than replace it, because a
// new key is a new identity to every other server.
var ErrCorruptKeyFile = errors.New("corrupt key file")

// PrivateKey is one of our ed25519 signing keys and its version (the part
// after "ed25519:" in the key ID). The zero value is not a usable key.
type PrivateKey struct {
	version string
	priv    ed25519.PrivateKey
}

// NewPrivateKey builds a key from its version and 32-byte seed.
func NewPrivateKey(version string, seed []byte) (PrivateKey, error) {
	if !validVersion(version) {
		return PrivateKey{}, fmt.Errorf("key version %q: only letters, digits and '_' are allowed", version)
	}
	if len(seed) != ed25519.SeedSize {
		return PrivateKey{}, fmt.Errorf("key %s: seed is %d bytes, want %d", version, len(seed), ed25519.SeedSize)
	}
	return PrivateKey{version: version, priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// GenerateKey makes a new key from rand with a version "a_" plus four
// random letters and digits, the shape Synapse gives generated keys.
func GenerateKey(r io.Reader) (PrivateKey, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	version := []byte("a_")
	for range 4 {
		n, err := rand.Int(r, big.NewInt(int64(len(alphabet))))
		if err != nil {
			return PrivateKey{}, fmt.Errorf("generate key version: %w", err)
		}
		version = append(version, alphabet[n.Int64()])
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(r, seed); err != nil {
		return PrivateKey{}, fmt.Errorf("generate key: %w", err)
	}
	return NewPrivateKey(string(version), seed)
}

// Version returns the key's version, e.g. "a_Obwu".
func (k PrivateKey) Version() string { return k.version }

// KeyID returns "ed25519:<version>".
func (k PrivateKey) KeyID() string { return "ed25519:" + k.version }

// Public returns the public half.
func (k PrivateKey) Public() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

// SigningKey returns the key as rooms' signing functions take it, filing
// signatures under serverName.
func (k PrivateKey) SigningKey(serverName string) rooms.SigningKey {
	return rooms.SigningKey{ServerName: serverName, KeyID: k.KeyID(), Private: k.priv}
}

// String hides the private half, so a key logged by mistake leaks nothing.
func (k PrivateKey) String() string { return k.KeyID() + " " + rooms.EncodeBase64(k.Public()) }

func validVersion(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// ParseKeyFile reads signing keys in Synapse's format. Blank lines are
// skipped; anything else that is not "ed25519 <version> <seed>" is an
// error matching ErrCorruptKeyFile.
func ParseKeyFile(data []byte) ([]PrivateKey, error) {
	var out []PrivateKey
	seen := map[string]bool{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		parts := strings.Fields(line)
		if len(parts) != 3 || parts[0] != "ed25519" {
			return nil, fmt.Errorf("%w: line %d: expected \"ed25519 <version> <base64 seed>\"", ErrCorruptKeyFile, i+1)
		}
		seed, err := rooms.DecodeBase64(parts[2])
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: seed is not base64", ErrCorruptKeyFile, i+1)
		}
		k, err := NewPrivateKey(parts[1], seed)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrCorruptKeyFile, i+1, err)
		}
		if seen[k.version] {
			return nil, fmt.Errorf("%w: line %d: key version %s appears twice", ErrCorruptKeyFile, i+1, k.version)
		}
		seen[k.version] = true
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no key in file", ErrCorruptKeyFile)
	}
	return out, nil
}

// FormatKeyFile writes keys in the format ParseKeyFile reads.
func FormatKeyFile(keys ...PrivateKey) []byte {
	var buf bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&buf, "ed25519 %s %s\n", k.version, rooms.EncodeBase64(k.priv.Seed()))
	}
	return buf.Bytes()
}

// OldKey is a retired key of a server: published under old_verify_keys,
// valid only for events sent before ExpiredTS.
type OldKey struct {
	KeyID     string // "ed25519:<version>"
	Public    ed25519.PublicKey
	ExpiredTS int64 // ms since the epoch
}

// ParseOldKeysFile reads OldSigningKeysFile lines
// "ed25519 <version> <base64 public key> <expired_ts>". Blank lines and
// lines starting with '#' are skipped.
func ParseOldKeysFile(data []byte) ([]OldKey, error) {
	var out []OldKey
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Fields(line)
		if len(parts) != 4 || parts[0] != "ed25519" || !validVersion(parts[1]) {
			return nil, fmt.Errorf("%w: line %d: expected \"ed25519 <version> <base64 public key> <expired_ts>\"", ErrCorruptKeyFile, i+1)
		}
		pub, err := rooms.DecodeBase64(parts[2])
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: line %d: public key is not 32 bytes of base64", ErrCorruptKeyFile, i+1)
		}
		ts, err := strconv.ParseInt(parts[3], 10, 64)
		if err != nil || ts < 0 {
			return nil, fmt.Errorf("%w: line %d: expired_ts %q is not milliseconds since the epoch", ErrCorruptKeyFile, i+1, parts[3])
		}
		out = append(out, OldKey{KeyID: "ed25519:" + parts[1], Public: ed25519.PublicKey(pub), ExpiredTS: ts})
	}
	return out, nil
}

// Own is the set of keys this server holds: the current signing keys (the
// first signs everything we send) and retired keys still published.
// It is read-only after loading and safe for concurrent use.
type Own struct {
	Current []PrivateKey // at least one
	Old     []OldKey
}

// Signer returns the key Ferry signs events and requests with.
func (o *Own) Signer(serverName string) rooms.SigningKey {
	return o.Current[0].SigningKey(serverName)
}

// LoadOrGenerate reads the keys in dir, creating signing.key with a fresh
// key if it does not exist (created reports that). A key file that exists
// but does not parse is an error matching ErrCorruptKeyFile and is left
// untouched. A missing old_signing.keys means no old keys.
func LoadOrGenerate(dir string, random io.Reader) (own *Own, created bool, err error) {
	path := filepath.Join(dir, SigningKeyFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		k, err := GenerateKey(random)
		if err != nil {
			return nil, false, err
		}
		if err := writeFileAtomic(path, FormatKeyFile(k), 0o600); err != nil {
			return nil, false, fmt.Errorf("write signing key: %w", err)
		}
		own = &Own{Current: []PrivateKey{k}}
		created = true
	case err != nil:
		return nil, false, fmt.Errorf("read signing key: %w", err)
	default:
		current, err := ParseKeyFile(data)
		if err != nil {
			return nil, false, fmt.Errorf("signing key %s: %w (fix or move it away; deleting it gives this server a new identity)", path, err)
		}
		own = &Own{Current: current}
	}

	oldPath := filepath.Join(dir, OldSigningKeysFile)
	data, err = os.ReadFile(oldPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, false, fmt.Errorf("read old signing keys: %w", err)
	default:
		if own.Old, err = ParseOldKeysFile(data); err != nil {
			return nil, false, fmt.Errorf("old signing keys %s: %w", oldPath, err)
		}
	}
	for _, old := range own.Old {
		for _, k := range own.Current {
			if old.KeyID == k.KeyID() {
				return nil, false, fmt.Errorf("old signing keys %s: %w: %s is also a current key in %s", oldPath, ErrCorruptKeyFile, old.KeyID, SigningKeyFile)
			}
		}
	}
	return own, created, nil
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it into place, so a crash never leaves a half-written key behind.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
