package federation

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLoadOrCreateSelfSigned(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

	cert, created, err := LoadOrCreateSelfSigned(dir, "hs1.test:8448", now)
	if err != nil || !created {
		t.Fatalf("first call: created=%v err=%v", created, err)
	}
	if err := cert.Leaf.VerifyHostname("hs1.test"); err != nil {
		t.Errorf("certificate is not for hs1.test: %v", err)
	}
	info, err := os.Stat(filepath.Join(dir, SelfSignedKeyFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v", info, err)
	}

	again, created, err := LoadOrCreateSelfSigned(dir, "hs1.test:8448", now.Add(24*time.Hour))
	if err != nil || created || !bytes.Equal(again.Certificate[0], cert.Certificate[0]) {
		t.Errorf("second call: created=%v err=%v, want the same certificate", created, err)
	}

	// Another name, or a certificate near its end, gets a new one.
	renamed, created, err := LoadOrCreateSelfSigned(dir, "hs2.test", now)
	if err != nil || !created || renamed.Leaf.VerifyHostname("hs2.test") != nil {
		t.Errorf("renamed: created=%v err=%v", created, err)
	}
	_, created, err = LoadOrCreateSelfSigned(dir, "hs2.test", now.Add(360*24*time.Hour))
	if err != nil || !created {
		t.Errorf("expiring: created=%v err=%v", created, err)
	}

	// A damaged file is replaced rather than fatal.
	if err := os.WriteFile(filepath.Join(dir, SelfSignedCertFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, created, err := LoadOrCreateSelfSigned(dir, "hs2.test", now); err != nil || !created {
		t.Errorf("damaged: created=%v err=%v", created, err)
	}
}

func TestLoadOrCreateSelfSigned_IPLiterals(t *testing.T) {
	for name, ip := range map[string]string{"127.0.0.1:8448": "127.0.0.1", "[::1]:8448": "::1", "[2001:db8::1]": "2001:db8::1"} {
		cert, _, err := LoadOrCreateSelfSigned(t.TempDir(), name, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(cert.Leaf.IPAddresses) != 1 || !cert.Leaf.IPAddresses[0].Equal(net.ParseIP(ip)) {
			t.Errorf("%s: IP SANs %v, want %s", name, cert.Leaf.IPAddresses, ip)
		}
	}
}
