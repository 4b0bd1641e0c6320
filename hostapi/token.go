package hostapi

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// TokenFile is the name of the host token's file in the data directory.
const TokenFile = "host_token"

// tokenBytes is the entropy of a generated token.
const tokenBytes = 32

// LoadOrCreateToken returns the host API token kept in
// <dataDir>/host_token, creating the file (mode 0600, 32 random bytes
// base64url-encoded) when it does not exist; created reports that. A
// token file readable or writable by anyone but its owner, or an empty
// one, is refused rather than used: the token is the only thing between
// a local process and acting as every local user.
func LoadOrCreateToken(dataDir string) (token string, created bool, err error) {
	path := filepath.Join(dataDir, TokenFile)
	token, err = readToken(path)
	if err == nil {
		return token, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, err
	}
	raw := make([]byte, tokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", false, fmt.Errorf("host token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(raw)
	// O_EXCL: if another process created the file meanwhile, use its
	// token instead of overwriting it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		token, err = readToken(path)
		return token, false, err
	}
	if err != nil {
		return "", false, fmt.Errorf("host token: %w", err)
	}
	if _, err := f.WriteString(token + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return "", false, fmt.Errorf("host token: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return "", false, fmt.Errorf("host token: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return "", false, fmt.Errorf("host token: write %s: %w", path, err)
	}
	return token, true, nil
}

// readToken reads an existing token file, checking its permissions.
func readToken(path string) (string, error) {
	info, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		return "", fmt.Errorf("host token: %w", err)
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("host token: %s is not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("host token: %s has mode %04o; it must be readable by its owner only (chmod 600 %s)", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("host token: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("host token: %s is empty; delete it to have a new token generated, or write a token into it", path)
	}
	if strings.ContainsAny(token, " \t\r\n") {
		return "", fmt.Errorf("host token: %s must hold one token on one line", path)
	}
	return token, nil
}
