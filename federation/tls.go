package federation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files of the generated certificate inside the data directory.
const (
	SelfSignedCertFile = "tls.crt"
	SelfSignedKeyFile  = "tls.key"
)

// selfSignedLifetime is the validity of a generated certificate; one that
// has less than selfSignedRenewBefore left is replaced on start.
const (
	selfSignedLifetime    = 365 * 24 * time.Hour
	selfSignedRenewBefore = 7 * 24 * time.Hour
)

// TLSConfig returns the listener configuration for cert: TLS 1.2 or later,
// HTTP/2 and HTTP/1.1.
func TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// LoadOrCreateSelfSigned returns the certificate kept in dir for
// serverName's host, generating a self-signed one when there is none, or
// the one there is for another host, unreadable, or about to expire.
// created reports whether a new one was written. Other servers only accept
// it with certificate verification turned off, so it is for trials and
// tests; production deployments configure a real certificate.
func LoadOrCreateSelfSigned(dir, serverName string, now time.Time) (cert tls.Certificate, created bool, err error) {
	host := hostOfServerName(serverName)
	certPath := filepath.Join(dir, SelfSignedCertFile)
	keyPath := filepath.Join(dir, SelfSignedKeyFile)

	// A missing, damaged or outdated generated certificate is replaced:
	// it carries no identity worth keeping (the signing key does), so a
	// crash while writing it costs nothing but a new certificate.
	if cert, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && cert.Leaf != nil &&
		cert.Leaf.VerifyHostname(host) == nil && now.Add(selfSignedRenewBefore).Before(cert.Leaf.NotAfter) {
		return cert, false, nil
	}

	certPEM, keyPEM, err := selfSigned(host, now)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("write TLS key: %w", err)
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("write TLS certificate: %w", err)
	}
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("self-signed certificate: %w", err)
	}
	return cert, true, nil
}

// hostOfServerName strips the port and IPv6 brackets from a server name.
func hostOfServerName(name string) string {
	if strings.HasPrefix(name, "[") {
		if end := strings.IndexByte(name, ']'); end > 0 {
			return name[1:end]
		}
		return name
	}
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		return name[:i]
	}
	return name
}

func selfSigned(host string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("generate certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host, Organization: []string{"Ferry self-signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode TLS key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}
