package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/ferry-matrix/ferry/federation"
)

// tlsSteps connects to every address of every target, as a federating
// server would, and reports the certificate each presents. It returns how
// many addresses could be used: the handshake worked and the certificate
// is valid (or --insecure is set).
func (c *checker) tlsSteps(ctx context.Context, res federation.Resolution, targets []resolvedTarget) int {
	usable := 0
	for _, t := range targets {
		for _, addr := range t.addrs {
			s := c.inspectTLS(ctx, res.TLSServerName, t.target, addr)
			if s.Status == checkOK || s.Status == checkWarn {
				usable++
			}
			c.add(s)
		}
	}
	return usable
}

// certInfo is one certificate of a chain, in the report.
type certInfo struct {
	Subject   string   `json:"subject"`
	SANs      []string `json:"sans"`
	Issuer    string   `json:"issuer"`
	NotBefore string   `json:"not_before"`
	NotAfter  string   `json:"not_after"`
}

// inspectTLS handshakes with addr, verification off so that a bad
// certificate can still be shown, then verifies the chain and the name
// itself.
func (c *checker) inspectTLS(ctx context.Context, tlsName, target string, addr netip.AddrPort) checkStep {
	where := addr.String()
	if where != target {
		where += " (" + target + ")"
	}
	details := map[string]any{"address": addr.String(), "target": target, "tls_server_name": tlsName}
	dctx, cancel := context.WithTimeout(ctx, c.opts.timeout)
	defer cancel()
	dialer := net.Dialer{}
	conn, err := dialer.DialContext(dctx, "tcp", addr.String())
	if err != nil {
		details["error"] = err.Error()
		return checkStep{Name: stepTLS, Status: checkFail, Summary: where + ": cannot connect: " + err.Error(), Details: details}
	}
	defer conn.Close()
	// ServerName drives SNI; crypto/tls sends none when it is an IP
	// address, which is what the spec asks for IP literals.
	tlsConn := tls.Client(conn, &tls.Config{
		ServerName:         tlsName,
		InsecureSkipVerify: true, //nolint:gosec // verified below, so a bad certificate can be described
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"http/1.1"},
	})
	if err := tlsConn.HandshakeContext(dctx); err != nil {
		details["error"] = err.Error()
		return checkStep{Name: stepTLS, Status: checkFail, Summary: where + ": TLS handshake failed: " + err.Error(), Details: details}
	}
	state := tlsConn.ConnectionState()
	details["tls_version"] = tls.VersionName(state.Version)
	if len(state.PeerCertificates) == 0 {
		return checkStep{Name: stepTLS, Status: checkFail, Summary: where + ": no certificate presented", Details: details}
	}

	now := c.opts.now()
	chain := make([]certInfo, len(state.PeerCertificates))
	var lines []string
	for i, cert := range state.PeerCertificates {
		chain[i] = describeCert(cert)
		lines = append(lines, fmt.Sprintf("[%d] subject %s; SANs %s; issuer %s; valid %s to %s", i, chain[i].Subject,
			strings.Join(chain[i].SANs, ", "), chain[i].Issuer, chain[i].NotBefore, chain[i].NotAfter))
	}
	details["certificates"] = chain

	leaf := state.PeerCertificates[0]
	intermediates := x509.NewCertPool()
	for _, cert := range state.PeerCertificates[1:] {
		intermediates.AddCert(cert)
	}
	var problems, warnings []string
	nameErr := leaf.VerifyHostname(tlsName)
	details["valid_for_name"] = nameErr == nil
	if nameErr != nil {
		problems = append(problems, fmt.Sprintf("not valid for %s (it names %s)", tlsName, strings.Join(chain[0].SANs, ", ")))
	}
	_, chainErr := leaf.Verify(x509.VerifyOptions{Roots: c.roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	details["trusted"] = chainErr == nil
	if chainErr != nil {
		details["chain_error"] = chainErr.Error()
		problems = append(problems, "does not chain to a trusted root: "+chainErr.Error())
	}
	left := leaf.NotAfter.Sub(now)
	details["expires_in_seconds"] = int64(left / time.Second)
	switch {
	case left <= 0 || now.Before(leaf.NotBefore):
		// The chain check already names an expired certificate.
		if chainErr == nil {
			problems = append(problems, "outside its validity period")
		}
	case left < certExpiryWarning:
		warnings = append(warnings, fmt.Sprintf("expires in %s", roundDuration(left)))
	}

	s := checkStep{Name: stepTLS, Details: details, lines: lines}
	switch {
	case len(problems) == 0:
		s.Status = checkOK
		s.Summary = fmt.Sprintf("%s: %s, certificate valid for %s, trusted, expires %s", where, tls.VersionName(state.Version),
			tlsName, leaf.NotAfter.UTC().Format(time.RFC3339))
	case c.opts.insecure:
		s.Status = checkWarn
		s.Summary = fmt.Sprintf("%s: certificate %s; continuing because of --insecure (servers that verify TLS will refuse it)",
			where, strings.Join(problems, "; "))
	default:
		s.Status = checkFail
		s.Summary = fmt.Sprintf("%s: certificate %s", where, strings.Join(problems, "; "))
	}
	if len(warnings) > 0 {
		if s.Status == checkOK {
			s.Status = checkWarn
		}
		s.Summary += "; " + strings.Join(warnings, "; ")
	}
	return s
}

func describeCert(cert *x509.Certificate) certInfo {
	sans := append([]string{}, cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		sans = append(sans, ip.String())
	}
	if len(sans) == 0 {
		sans = []string{"(none)"}
	}
	return certInfo{
		Subject:   cert.Subject.String(),
		SANs:      sans,
		Issuer:    cert.Issuer.String(),
		NotBefore: cert.NotBefore.UTC().Format(time.RFC3339),
		NotAfter:  cert.NotAfter.UTC().Format(time.RFC3339),
	}
}

// isCertificateError reports whether err is a failed certificate check,
// as opposed to a server that is not there.
func isCertificateError(err error) bool {
	var verr *tls.CertificateVerificationError
	var hostErr x509.HostnameError
	var authErr x509.UnknownAuthorityError
	var invalidErr x509.CertificateInvalidError
	return errors.As(err, &verr) || errors.As(err, &hostErr) || errors.As(err, &authErr) || errors.As(err, &invalidErr)
}
