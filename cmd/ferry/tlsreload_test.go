package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/config"
	"github.com/ferry-matrix/ferry/federation"
)

// testCertificate is a self-signed certificate for one DNS name, as PEM.
type testCertificate struct {
	name              string
	certPEM, keyPEM   []byte
	parsedCertificate *x509.Certificate
}

func newTestCertificate(t *testing.T, name string) testCertificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testCertificate{
		name:              name,
		certPEM:           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:            pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		parsedCertificate: parsed,
	}
}

// install writes the certificate where federation.tls_cert and tls_key
// point, the way a renewal tool replaces them.
func (c testCertificate) install(t *testing.T, certFile, keyFile string) {
	t.Helper()
	if err := os.WriteFile(certFile, c.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

// reloadLogBuffer collects log output written from the SIGHUP goroutine.
type reloadLogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *reloadLogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *reloadLogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serveTLS runs a TLS listener on loopback with the federation listener's
// configuration and certs as its certificate source, completing the
// handshake of every connection.
func serveTLS(t *testing.T, certs *certificateFiles) string {
	t.Helper()
	config := federation.TLSConfig(tls.Certificate{})
	config.Certificates = nil
	config.GetCertificate = certs.GetCertificate
	ln, err := tls.Listen("tcp", "127.0.0.1:0", config)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	return ln.Addr().String()
}

// handshake connects to addr verifying the server's certificate for name
// against the given self-signed certificates, and returns the name the
// presented certificate is for.
func handshake(t *testing.T, addr, name string, trusted ...testCertificate) (string, error) {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range trusted {
		pool.AddCert(c.parsedCertificate)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: name})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func TestCertificateFiles_Reload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first, second := newTestCertificate(t, "first.test"), newTestCertificate(t, "second.test")
	first.install(t, certFile, keyFile)
	var logs reloadLogBuffer
	certs, err := loadCertificateFiles(certFile, keyFile, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, certs)
	if got, err := handshake(t, addr, "first.test", first); err != nil || got != "first.test" {
		t.Fatalf("before reload: %q, %v", got, err)
	}

	// New files take effect at Reload, not before.
	second.install(t, certFile, keyFile)
	if got, err := handshake(t, addr, "first.test", first); err != nil || got != "first.test" {
		t.Fatalf("files replaced, not reloaded: %q, %v", got, err)
	}
	if err := certs.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, err := handshake(t, addr, "second.test", second); err != nil || got != "second.test" {
		t.Fatalf("after reload: %q, %v", got, err)
	}
	if _, err := handshake(t, addr, "first.test", first); err == nil {
		t.Error("the replaced certificate is still presented")
	}
	if !strings.Contains(logs.String(), `"message":"TLS certificate reloaded"`) || !strings.Contains(logs.String(), `"dns_names":["second.test"]`) {
		t.Errorf("reload not logged with the new names: %s", logs.String())
	}

	// Bad files leave the working certificate in place.
	bad := []struct {
		name      string
		cert, key []byte
	}{
		{"cert not PEM", []byte("not a certificate"), second.keyPEM},
		{"key of another certificate", second.certPEM, first.keyPEM},
		{"empty key", second.certPEM, nil},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(certFile, tt.cert, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(keyFile, tt.key, 0o600); err != nil {
				t.Fatal(err)
			}
			err := certs.Reload()
			if err == nil || !strings.Contains(err.Error(), "federation.tls_cert "+certFile) {
				t.Fatalf("Reload() = %v, want an error naming the file", err)
			}
			if got, err := handshake(t, addr, "second.test", second); err != nil || got != "second.test" {
				t.Errorf("after a failed reload: %q, %v", got, err)
			}
		})
	}
	if !strings.Contains(logs.String(), "TLS certificate reload failed; keeping the previous certificate") {
		t.Errorf("failed reload not logged: %s", logs.String())
	}
}

func TestLoadCertificateFiles_Errors(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if _, err := loadCertificateFiles(certFile, keyFile, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing files: %v", err)
	}
	a, b := newTestCertificate(t, "a.test"), newTestCertificate(t, "b.test")
	a.install(t, certFile, keyFile)
	if err := os.WriteFile(keyFile, b.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCertificateFiles(certFile, keyFile, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "private key does not match public key") {
		t.Errorf("mismatched pair: %v", err)
	}
}

// TestWatchSIGHUP sends the test process a real SIGHUP, as systemctl
// reload does, and waits for the new certificate to be presented.
func TestWatchSIGHUP(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	before, after := newTestCertificate(t, "before.test"), newTestCertificate(t, "after.test")
	before.install(t, certFile, keyFile)
	var logs reloadLogBuffer
	logger := zerolog.New(&logs)
	certs, err := loadCertificateFiles(certFile, keyFile, logger)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, certs)
	stop := watchSIGHUP(certs, logger)
	defer stop()

	after.install(t, certFile, keyFile)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The reload happens on the watcher's goroutine: wait for it, giving
	// up (a failure, not a timing assertion) after a generous bound.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got, err := handshake(t, addr, "after.test", before, after)
		if err == nil && got == "after.test" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not reload the certificate: last handshake %q, %v; logs: %s", got, err, logs.String())
		}
	}
	stop()
	stop() // idempotent
}

// TestWatchSIGHUP_NothingToReload checks that without certificate files
// SIGHUP is logged and survived rather than ending the process.
func TestWatchSIGHUP_NothingToReload(t *testing.T) {
	var logs reloadLogBuffer
	stop := watchSIGHUP(nil, zerolog.New(&logs))
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "nothing to reload"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP not logged: %q", logs.String())
		}
	}
}

func TestReloadableCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	newTestCertificate(t, "files.test").install(t, certFile, keyFile)

	cfg := config.Default()
	cfg.Federation.TLSCert, cfg.Federation.TLSKey = certFile, keyFile
	get, stop, err := reloadableCertificate(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	cert, err := get(&tls.ClientHelloInfo{ServerName: "files.test"})
	if err != nil || cert.Leaf == nil || cert.Leaf.Subject.CommonName != "files.test" {
		t.Errorf("GetCertificate = %v, %v", cert, err)
	}
	stop()

	// No files (a generated certificate, or plain HTTP): nothing to serve
	// from here, but SIGHUP is still handled.
	for _, c := range []*config.Config{config.Default(), {Federation: config.Federation{PlainHTTP: true}}} {
		get, stop, err := reloadableCertificate(c, zerolog.Nop())
		if err != nil || get != nil || stop == nil {
			t.Errorf("without files: %v, %v", get != nil, err)
		}
		if stop != nil {
			stop()
		}
	}

	cfg.Federation.TLSKey = filepath.Join(dir, "missing.key")
	if _, _, err := reloadableCertificate(cfg, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "missing.key") {
		t.Errorf("missing key file: %v", err)
	}
}
