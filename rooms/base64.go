package rooms

import (
	"encoding/base64"
	"strings"
)

// EncodeBase64 encodes b as unpadded standard base64, the encoding Matrix
// uses for keys, signatures and hashes.
func EncodeBase64(b []byte) string {
	return base64.RawStdEncoding.EncodeToString(b)
}

// DecodeBase64 decodes standard base64, padded or not, as the spec asks
// receivers to accept both.
func DecodeBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// EncodeBase64URL encodes b as unpadded URL-safe base64, used for event IDs
// (room versions 4 and later) and version 12 room IDs.
func EncodeBase64URL(b []byte) string {
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeBase64URL decodes URL-safe base64, padded or not.
func DecodeBase64URL(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
