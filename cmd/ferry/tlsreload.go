package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/config"
)

// certificateFiles is the federation listener's certificate as read from
// federation.tls_cert and federation.tls_key. Reload reads the files again
// and swaps the certificate in for new handshakes, so a renewed
// certificate (certbot, an ACME client, a copy from a secret store) takes
// effect without a restart. Connections already open keep the certificate
// they were made with. Safe for concurrent use.
type certificateFiles struct {
	certFile, keyFile string
	logger            zerolog.Logger
	current           atomic.Pointer[tls.Certificate]
}

// loadCertificateFiles reads the PEM certificate chain and private key.
// Unlike Reload, a failure here is fatal to the caller: there is no
// previous certificate to fall back on.
func loadCertificateFiles(certFile, keyFile string, logger zerolog.Logger) (*certificateFiles, error) {
	c := &certificateFiles{certFile: certFile, keyFile: keyFile, logger: logger}
	cert, err := c.read()
	if err != nil {
		return nil, err
	}
	c.current.Store(cert)
	c.logLoaded(cert, "TLS certificate loaded")
	return c, nil
}

// GetCertificate returns the certificate in force. It is meant as the
// listener's tls.Config.GetCertificate, with tls.Config.Certificates left
// empty so that every handshake asks it.
func (c *certificateFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.current.Load(), nil
}

// Reload reads the files again. If they do not make a valid pair the
// current certificate stays in force and the error says why; either way
// the outcome is logged.
func (c *certificateFiles) Reload() error {
	cert, err := c.read()
	if err != nil {
		c.logger.Error().Err(err).Str("cert_file", c.certFile).Str("key_file", c.keyFile).
			Msg("TLS certificate reload failed; keeping the previous certificate")
		return err
	}
	c.current.Store(cert)
	c.logLoaded(cert, "TLS certificate reloaded")
	return nil
}

func (c *certificateFiles) read() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return nil, fmt.Errorf("federation.tls_cert %s / federation.tls_key %s: %w", c.certFile, c.keyFile, err)
	}
	// LoadX509KeyPair has parsed the leaf (cert.Leaf) since Go 1.23,
	// which logLoaded reports from.
	return &cert, nil
}

func (c *certificateFiles) logLoaded(cert *tls.Certificate, msg string) {
	ev := c.logger.Info().Str("cert_file", c.certFile)
	if leaf := cert.Leaf; leaf != nil {
		ev = ev.Strs("dns_names", leaf.DNSNames).
			Str("issuer", leaf.Issuer.CommonName).
			Str("not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
		if time.Now().After(leaf.NotAfter) {
			c.logger.Warn().Str("cert_file", c.certFile).Str("not_after", leaf.NotAfter.UTC().Format(time.RFC3339)).
				Msg("TLS certificate has expired: other servers will refuse to connect")
		}
	}
	ev.Msg(msg)
}

// reloadableCertificate is `ferry serve`'s TLS reload in one call: when
// cfg names certificate files (federation.tls_cert and tls_key, without
// plain_http) it loads them and returns their GetCertificate for the
// federation listener, else nil (Ferry then uses its generated
// certificate, or none). Either way SIGHUP is handled from now until stop
// is called, reloading the files or logging that there is nothing to
// reload. A file that cannot be loaded is an error, and nothing is left
// running.
func reloadableCertificate(cfg *config.Config, logger zerolog.Logger) (getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error), stop func(), err error) {
	f := cfg.Federation
	var certs *certificateFiles
	if f.TLSCert != "" && !f.PlainHTTP {
		certs, err = loadCertificateFiles(f.TLSCert, f.TLSKey, logger)
		if err != nil {
			return nil, nil, err
		}
		getCertificate = certs.GetCertificate
	}
	return getCertificate, watchSIGHUP(certs, logger), nil
}

// watchSIGHUP reloads certs each time the process receives SIGHUP (what
// `systemctl reload ferry` and `docker kill -s HUP` send) until stop is
// called. certs may be nil (plain_http, or a generated self-signed
// certificate): SIGHUP is then logged as having nothing to reload, rather
// than ending the process as it would by default. The handler is
// installed before watchSIGHUP returns, so a SIGHUP sent after it cannot
// kill the process.
func watchSIGHUP(certs *certificateFiles, logger zerolog.Logger) (stop func()) {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-signals:
				if certs == nil {
					logger.Info().Msg("SIGHUP: no federation.tls_cert configured, nothing to reload")
					continue
				}
				// Reload logs its own outcome.
				_ = certs.Reload()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(signals)
			close(done)
			wg.Wait()
		})
	}
}
