package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/federation"
	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/keys"
)

// checkPKI is a throwaway CA standing in for the web PKI: the checker
// trusts it instead of the system roots.
type checkPKI struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	mu   sync.Mutex
	next int64
}

func newCheckPKI(t *testing.T) *checkPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ferry check test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &checkPKI{cert: cert, key: key, pool: pool, next: 1}
}

// issue returns a certificate for names signed by the CA, with the CA in
// its chain as servers usually send it.
func (p *checkPKI) issue(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.next++
	serial := p.next
	p.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: names,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, p.cert.Raw}, PrivateKey: key}
}

// checkDNS is the test's DNS: names (with the port asked for) and SRV
// records point at loopback listeners; everything else does not exist.
type checkDNS struct {
	mu    sync.Mutex
	hosts map[string][]netip.AddrPort // "host:port"
	srv   map[string][]*net.SRV       // "_service._tcp.name"
}

var _ federation.Resolver = (*checkDNS)(nil)

func newCheckDNS() *checkDNS {
	return &checkDNS{hosts: map[string][]netip.AddrPort{}, srv: map[string][]*net.SRV{}}
}

func (d *checkDNS) mapHost(host string, port uint16, to netip.AddrPort) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := net.JoinHostPort(host, strconv.Itoa(int(port)))
	d.hosts[k] = append(d.hosts[k], to)
}

func (d *checkDNS) mapSRV(service, name, target string, port uint16) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := "_" + service + "._tcp." + name
	d.srv[k] = append(d.srv[k], &net.SRV{Target: target, Port: port, Priority: 10, Weight: 5})
}

func (d *checkDNS) LookupHostPort(_ context.Context, host string, port uint16) ([]netip.AddrPort, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.hosts[net.JoinHostPort(host, strconv.Itoa(int(port)))]; ok {
		return a, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ip, port)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (d *checkDNS) LookupSRV(_ context.Context, service, name string) ([]*net.SRV, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.srv["_"+service+"._tcp."+name]; ok {
		return s, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: "_" + service + "._tcp." + name, IsNotFound: true}
}

// newCheckFerry returns a real federation server for serverName with a
// signing key generated into a temporary data directory.
func newCheckFerry(t *testing.T, serverName string) *federation.Server {
	t.Helper()
	own, _, err := keys.LoadOrGenerate(t.TempDir(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fed := federation.NewServer(serverName, own)
	fed.Addr = "127.0.0.1:0"
	return fed
}

// openCheckFerry starts fed with TLS for cert and returns its address.
func openCheckFerry(t *testing.T, fed *federation.Server, cert tls.Certificate) netip.AddrPort {
	t.Helper()
	fed.TLSConfig = federation.TLSConfig(cert)
	if err := fed.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fed.Close(context.Background()) })
	return netip.MustParseAddrPort(fed.ListenAddr().String())
}

// serveCheckTLS serves handler over TLS on loopback, for a Ferry whose
// answers a test alters on the way out.
func serveCheckTLS(t *testing.T, cert tls.Certificate, handler http.Handler) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, TLSConfig: federation.TLSConfig(cert), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// checkRun runs `ferry check` with args against the test DNS and CA.
func checkRun(t *testing.T, env map[string]string, dns federation.Resolver, roots *x509.CertPool, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = checkMain(context.Background(), args, envMap(env), &out, &errOut, func(o *checkOptions) {
		o.resolver, o.roots = dns, roots
	})
	return code, out.String(), errOut.String()
}

// checkRunJSON runs `ferry check --json` and decodes the report.
func checkRunJSON(t *testing.T, env map[string]string, dns federation.Resolver, roots *x509.CertPool, args ...string) (int, *checkReport) {
	t.Helper()
	code, out, errOut := checkRun(t, env, dns, roots, append([]string{"--json"}, args...)...)
	var report checkReport
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("--json output does not parse: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	return code, &report
}

// stepsNamed returns the report's steps called name, in order.
func stepsNamed(r *checkReport, name string) []checkStep {
	var out []checkStep
	for _, s := range r.Steps {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// oneStep returns the only step called name, failing the test otherwise.
func oneStep(t *testing.T, r *checkReport, name string) checkStep {
	t.Helper()
	steps := stepsNamed(r, name)
	if len(steps) != 1 {
		t.Fatalf("report has %d %s steps, want 1: %+v", len(steps), name, r.Steps)
	}
	return steps[0]
}

func wantStatus(t *testing.T, s checkStep, status checkStatus, summaryHas string) {
	t.Helper()
	if s.Status != status || !strings.Contains(s.Summary, summaryHas) {
		t.Fatalf("step %s = %s %q, want %s containing %q (details %v)", s.Name, s.Status, s.Summary, status, summaryHas, s.Details)
	}
}

// noIdentity is an environment with no Ferry configured.
var noIdentity = map[string]string{}

// TestCheck_HealthyDelegatedServer checks a Ferry reached the long way:
// its .well-known (served by Ferry itself) delegates to a name whose
// _matrix-fed SRV record points at another host and port. Every step
// passes, the certificate is checked for the delegated name, and the
// human output has a line per step and a positive verdict.
func TestCheck_HealthyDelegatedServer(t *testing.T) {
	pki := newCheckPKI(t)
	dns := newCheckDNS()
	fed := newCheckFerry(t, "good.test")
	fed.WellKnownServer = "fed.good.test"
	fed.Version = "1.2.3"
	addr := openCheckFerry(t, fed, pki.issue(t, "good.test", "fed.good.test"))
	dns.mapHost("good.test", 443, addr)
	dns.mapSRV("matrix-fed", "fed.good.test", "box.good.test.", 8448)
	dns.mapHost("box.good.test", 8448, addr)

	code, report := checkRunJSON(t, noIdentity, dns, pki.pool, "good.test")
	if code != 0 || !report.OK {
		t.Fatalf("exit %d, report %+v", code, report)
	}
	wk := oneStep(t, report, stepWellKnown)
	wantStatus(t, wk, checkOK, `m.server "fed.good.test"`)
	if wk.Details["status"] != float64(200) || wk.Details["cache_control"] != "max-age=86400" || wk.Details["cache_seconds"] != float64(86400) {
		t.Fatalf("well-known details %v", wk.Details)
	}
	srv := stepsNamed(report, stepSRV)
	if len(srv) != 1 {
		t.Fatalf("SRV steps %+v", srv)
	}
	wantStatus(t, srv[0], checkOK, "_matrix-fed._tcp.fed.good.test → box.good.test:8448")
	res := report.Resolution
	if res == nil || !res.Delegated || res.Via != "srv:matrix-fed" || res.HostHeader != "fed.good.test" ||
		res.TLSServerName != "fed.good.test" || res.SNI != "fed.good.test" || len(res.Targets) != 1 || res.Targets[0] != "box.good.test:8448" {
		t.Fatalf("resolution %+v", res)
	}
	// Loopback is reported: servers on the internet could not get there.
	wantStatus(t, oneStep(t, report, stepAddresses), checkWarn, addr.String())
	tlsStep := oneStep(t, report, stepTLS)
	wantStatus(t, tlsStep, checkOK, "certificate valid for fed.good.test, trusted")
	if tlsStep.Details["valid_for_name"] != true || tlsStep.Details["trusted"] != true {
		t.Fatalf("tls details %v", tlsStep.Details)
	}
	if chain, _ := tlsStep.Details["certificates"].([]any); len(chain) != 2 {
		t.Fatalf("certificate chain %v", tlsStep.Details["certificates"])
	}
	keyID := fed.Keys.Current[0].KeyID()
	wantStatus(t, oneStep(t, report, stepServerKeys), checkOK, keyID+" self-signed and verified")
	wantStatus(t, oneStep(t, report, stepVersion), checkOK, "Ferry 1.2.3")
	if len(stepsNamed(report, stepMakeJoin)) != 0 {
		t.Fatal("make_join reported without --room")
	}

	// The same run, for people: a line per step, marks, the verdict.
	code, out, _ := checkRun(t, noIdentity, dns, pki.pool, "good.test")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{"✓ well_known", "✓ srv", "✓ resolution", "! addresses", "✓ tls", "✓ server_keys",
		"✓ version", "SNI: fed.good.test", "Host: fed.good.test", "CN=ferry check test CA", "✓ Federation with good.test should work"} {
		if !strings.Contains(out, want) {
			t.Errorf("human output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("human output:\n%s", out)
}

// TestCheck_JSONShape checks the field names --json consumers rely on.
func TestCheck_JSONShape(t *testing.T) {
	pki := newCheckPKI(t)
	dns := newCheckDNS()
	addr := openCheckFerry(t, newCheckFerry(t, "shape.test"), pki.issue(t, "shape.test"))
	dns.mapHost("shape.test", 8448, addr)

	code, out, _ := checkRun(t, noIdentity, dns, pki.pool, "shape.test", "--json")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"server_name", "ok", "verdict", "insecure", "resolution", "steps"} {
		if _, ok := raw[field]; !ok {
			t.Errorf("report lacks %q: %s", field, out)
		}
	}
	var names []string
	for _, s := range raw["steps"].([]any) {
		step := s.(map[string]any)
		for _, field := range []string{"name", "status", "summary"} {
			if _, ok := step[field]; !ok {
				t.Errorf("step lacks %q: %v", field, step)
			}
		}
		names = append(names, step["name"].(string))
	}
	want := "server_name well_known srv srv resolution addresses tls server_keys version"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("steps %q, want %q", got, want)
	}
	res := raw["resolution"].(map[string]any)
	if res["via"] != "default-port" || res["host_header"] != "shape.test" || res["sni"] != "shape.test" {
		t.Fatalf("resolution %v", res)
	}
}

// TestCheck_WrongCertificateName: the server presents a certificate for
// another name. The TLS step says so and names what the certificate is
// for; the key and version steps are skipped and the exit status is 1.
// With --insecure the check goes on and passes with a warning.
func TestCheck_WrongCertificateName(t *testing.T) {
	pki := newCheckPKI(t)
	dns := newCheckDNS()
	addr := openCheckFerry(t, newCheckFerry(t, "wrongcert.test"), pki.issue(t, "other.test"))
	dns.mapHost("wrongcert.test", 8448, addr)

	code, report := checkRunJSON(t, noIdentity, dns, pki.pool, "wrongcert.test")
	if code != 1 || report.OK {
		t.Fatalf("exit %d, ok %v", code, report.OK)
	}
	tlsStep := oneStep(t, report, stepTLS)
	wantStatus(t, tlsStep, checkFail, "not valid for wrongcert.test (it names other.test)")
	if tlsStep.Details["valid_for_name"] != false || tlsStep.Details["trusted"] != true {
		t.Fatalf("tls details %v", tlsStep.Details)
	}
	wantStatus(t, oneStep(t, report, stepServerKeys), checkSkip, "no address answered with a valid certificate")
	if !strings.Contains(report.Verdict, "would NOT work: tls") {
		t.Fatalf("verdict %q", report.Verdict)
	}

	code, report = checkRunJSON(t, noIdentity, dns, pki.pool, "--insecure", "wrongcert.test")
	if code != 0 || !report.OK || !report.Insecure {
		t.Fatalf("--insecure: exit %d, report %+v", code, report)
	}
	wantStatus(t, oneStep(t, report, stepTLS), checkWarn, "continuing because of --insecure")
	wantStatus(t, oneStep(t, report, stepServerKeys), checkOK, "self-signed and verified")
	wantStatus(t, oneStep(t, report, stepVersion), checkOK, "Ferry")
}

// TestCheck_UntrustedCertificate: Ferry's generated self-signed
// certificate has the right name but chains to no trusted root.
func TestCheck_UntrustedCertificate(t *testing.T) {
	pki := newCheckPKI(t)
	dns := newCheckDNS()
	dir := t.TempDir()
	cert, _, err := federation.LoadOrCreateSelfSigned(dir, "selfsigned.test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	addr := openCheckFerry(t, newCheckFerry(t, "selfsigned.test"), cert)
	dns.mapHost("selfsigned.test", 8448, addr)

	code, report := checkRunJSON(t, noIdentity, dns, pki.pool, "selfsigned.test")
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	tlsStep := oneStep(t, report, stepTLS)
	wantStatus(t, tlsStep, checkFail, "does not chain to a trusted root")
	if tlsStep.Details["valid_for_name"] != true || tlsStep.Details["trusted"] != false {
		t.Fatalf("tls details %v", tlsStep.Details)
	}

	// Trusting that certificate with --ca-file makes it pass.
	code, report = checkRunJSON(t, noIdentity, dns, pki.pool, "--ca-file", filepath.Join(dir, federation.SelfSignedCertFile), "selfsigned.test")
	if code != 0 {
		t.Fatalf("--ca-file: exit %d, steps %+v", code, report.Steps)
	}
	wantStatus(t, oneStep(t, report, stepTLS), checkOK, "trusted")
	if code, _, errOut := checkRun(t, noIdentity, dns, pki.pool, "--ca-file", filepath.Join(dir, "missing.pem"), "selfsigned.test"); code != 1 || !strings.Contains(errOut, "--ca-file") {
		t.Fatalf("missing --ca-file: exit %d, stderr %q", code, errOut)
	}
}

// TestCheck_BrokenWellKnown: a .well-known that answers 200 with
// something unusable is reported with the reason and the body, and
// discovery falls back as the spec says. Where nothing answers at the
// fallback the check fails; where the server also listens on 8448 it
// passes with the warning.
func TestCheck_BrokenWellKnown(t *testing.T) {
	cases := []struct {
		name, body, reason string
		fallbackListens    bool
	}{
		{"badjson.test", `{"m.server": "fed.badjson.test"`, "not a JSON object", false},
		{"nomserver.test", `{"server": "fed.nomserver.test"}`, "m.server missing or not a string", true},
		{"badname.test", `{"m.server": "fed_badname.test:99999"}`, "m.server", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pki := newCheckPKI(t)
			dns := newCheckDNS()
			fed := newCheckFerry(t, tc.name)
			// The site on 443 answers .well-known badly and passes
			// everything else to Ferry.
			ferry := fed.Handler()
			site := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/.well-known/matrix/server" {
					w.Header().Set("Content-Type", "application/json")
					_, _ = io.WriteString(w, tc.body)
					return
				}
				ferry.ServeHTTP(w, r)
			})
			cert := pki.issue(t, tc.name)
			dns.mapHost(tc.name, 443, serveCheckTLS(t, cert, site))
			if tc.fallbackListens {
				dns.mapHost(tc.name, 8448, openCheckFerry(t, fed, cert))
			}

			code, report := checkRunJSON(t, noIdentity, dns, pki.pool, tc.name)
			wk := oneStep(t, report, stepWellKnown)
			wantStatus(t, wk, checkWarn, "→ 200 but unusable")
			if err, _ := wk.Details["error"].(string); !strings.Contains(err, tc.reason) || wk.Details["body"] != tc.body {
				t.Fatalf("well-known details %v, want error with %q", wk.Details, tc.reason)
			}
			if report.Resolution == nil || report.Resolution.Delegated || report.Resolution.Via != "default-port" {
				t.Fatalf("resolution %+v", report.Resolution)
			}
			if len(stepsNamed(report, stepSRV)) != 2 {
				t.Fatalf("both SRV records should be looked up after a failed .well-known: %+v", report.Steps)
			}
			if tc.fallbackListens {
				if code != 0 || !report.OK || !strings.Contains(report.Verdict, "warning") {
					t.Fatalf("exit %d, verdict %q", code, report.Verdict)
				}
				return
			}
			if code != 1 || report.OK {
				t.Fatalf("exit %d, ok %v", code, report.OK)
			}
			wantStatus(t, oneStep(t, report, stepAddresses), checkFail, tc.name+":8448: A/AAAA lookup failed")
			if !strings.Contains(report.Verdict, ".well-known delegation was unusable") {
				t.Fatalf("verdict %q does not point at the .well-known", report.Verdict)
			}
			_, out, _ := checkRun(t, noIdentity, dns, pki.pool, tc.name)
			if !strings.Contains(out, "! well_known") || !strings.Contains(out, "body: "+tc.body) || !strings.Contains(out, "✗ Federation with "+tc.name+" would NOT work") {
				t.Fatalf("human output:\n%s", out)
			}
			t.Logf("human output:\n%s", out)
		})
	}
}

// TestCheck_KeyDocumentSignatureDoesNotVerify: the server's key document
// was altered after signing. The key step fails with the signature
// error; /version still answers.
func TestCheck_KeyDocumentSignatureDoesNotVerify(t *testing.T) {
	pki := newCheckPKI(t)
	dns := newCheckDNS()
	fed := newCheckFerry(t, "badkeys.test:8448")
	ferry := fed.Handler()
	tampered := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/key/v2/server" {
			ferry.ServeHTTP(w, r)
			return
		}
		body, err := fed.KeyDocument()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		var doc map[string]any
		if err := json.Unmarshal(body, &doc); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		// One more millisecond of validity: the signature no longer
		// covers what is published.
		doc["valid_until_ts"] = doc["valid_until_ts"].(float64) + 1
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	})
	dns.mapHost("badkeys.test", 8448, serveCheckTLS(t, pki.issue(t, "badkeys.test"), tampered))

	code, report := checkRunJSON(t, noIdentity, dns, pki.pool, "badkeys.test:8448")
	if code != 1 || report.OK {
		t.Fatalf("exit %d, ok %v", code, report.OK)
	}
	wantStatus(t, oneStep(t, report, stepWellKnown), checkSkip, "explicit port")
	wantStatus(t, oneStep(t, report, stepTLS), checkOK, "certificate valid for badkeys.test")
	keysStep := oneStep(t, report, stepServerKeys)
	wantStatus(t, keysStep, checkFail, "self-signature")
	wantStatus(t, oneStep(t, report, stepVersion), checkOK, "Ferry")
	if !strings.Contains(report.Verdict, "server_keys") {
		t.Fatalf("verdict %q", report.Verdict)
	}
}

// TestCheck_MakeJoin runs two real `ferry serve` instances: A holds a
// public room, and the check signs as B (its configuration given through
// FERRY_* variables, as in a container), so A can fetch B's key and
// answer make_join with a template. Without an identity the step is
// skipped with the reason.
func TestCheck_MakeJoin(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	start := func(dir string) (*running, string) {
		name := "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
		r := startServe(t, map[string]string{
			"FERRY_DATA_DIR": dir, "FERRY_SERVER_NAME": name, "FERRY_FEDERATION_LISTEN": name,
			"FERRY_FEDERATION_VERIFY_TLS": "false", "FERRY_FEDERATION_ALLOW_PRIVATE_ADDRESSES": "true",
		})
		return r, name
	}
	a, nameA := start(dirA)
	_, nameB := start(dirB)
	ctx := context.Background()
	roomID, err := a.inst.Engine().CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: "@alice:" + nameA, Version: "12", Preset: homeserver.PresetPublicChat})
	if err != nil {
		t.Fatal(err)
	}
	// A's generated certificate is for 127.0.0.1; trusting it is what a
	// real CA does for real names.
	pem, err := os.ReadFile(filepath.Join(dirA, federation.SelfSignedCertFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	dns := federation.SystemResolver{}
	asB := map[string]string{"FERRY_SERVER_NAME": nameB, "FERRY_DATA_DIR": dirB}

	code, report := checkRunJSON(t, asB, dns, roots, "--room", roomID, nameA)
	if code != 0 || !report.OK || report.Origin != nameB {
		t.Fatalf("exit %d, report %+v", code, report)
	}
	wantStatus(t, oneStep(t, report, stepServerName), checkOK, "IP literal")
	wantStatus(t, oneStep(t, report, stepTLS), checkOK, "certificate valid for 127.0.0.1")
	if report.Resolution.SNI != "" {
		t.Fatalf("SNI %q sent for an IP address", report.Resolution.SNI)
	}
	join := oneStep(t, report, stepMakeJoin)
	wantStatus(t, join, checkOK, "joining "+roomID+" would work: room version 12, template for @ferry-check:"+nameB)

	// An alias is resolved through A's directory first.
	alias := "#lobby:" + nameA
	if err := a.inst.Host().PutAlias(ctx, alias, roomID); err != nil {
		t.Fatal(err)
	}
	code, report = checkRunJSON(t, asB, dns, roots, "--room", alias, nameA)
	if code != 0 || !report.OK {
		t.Fatalf("alias: exit %d, report %+v", code, report)
	}
	wantStatus(t, oneStep(t, report, stepRoomAlias), checkOK, alias+" → "+roomID+" (servers: "+nameA+")")
	wantStatus(t, oneStep(t, report, stepMakeJoin), checkOK, "joining "+roomID+" would work")
	code, report = checkRunJSON(t, asB, dns, roots, "--room", "#nothing:"+nameA, nameA)
	if code != 1 {
		t.Fatalf("unknown alias: exit %d", code)
	}
	wantStatus(t, oneStep(t, report, stepRoomAlias), checkFail, "#nothing:"+nameA)
	wantStatus(t, oneStep(t, report, stepMakeJoin), checkSkip, "the alias did not resolve")

	// A room A is not in: A answers, and the check explains.
	code, report = checkRunJSON(t, asB, dns, roots, "--room", "!nowhere:"+nameA, nameA)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	wantStatus(t, oneStep(t, report, stepMakeJoin), checkFail, "make_join for @ferry-check:"+nameB)
	t.Logf("make_join refused: %s", oneStep(t, report, stepMakeJoin).Summary)

	// An identity A cannot fetch keys from (nothing listens at that
	// name): A refuses the signature, and the check says why.
	ghostDir := t.TempDir()
	if _, _, err := keys.LoadOrGenerate(ghostDir, rand.Reader); err != nil {
		t.Fatal(err)
	}
	ghost := "127.0.0.1:" + strconv.Itoa(freeLoopbackPort(t))
	code, report = checkRunJSON(t, map[string]string{"FERRY_SERVER_NAME": ghost, "FERRY_DATA_DIR": ghostDir}, dns, roots, "--room", roomID, nameA)
	if code != 1 {
		t.Fatalf("unreachable origin: exit %d", code)
	}
	ghostJoin := oneStep(t, report, stepMakeJoin)
	wantStatus(t, ghostJoin, checkFail, "it must reach "+ghost+" to fetch its keys")
	if ghostJoin.Details["status"] != float64(http.StatusUnauthorized) {
		t.Fatalf("make_join details %v", ghostJoin.Details)
	}

	// No identity: the authenticated step is skipped, not failed.
	code, out, errOut := checkRun(t, noIdentity, dns, roots, "--room", roomID, nameA)
	if code != 0 || !strings.Contains(out, "- make_join") || !strings.Contains(out, "must be signed by a server the target can fetch keys from") ||
		!strings.Contains(errOut, "no Ferry configuration found") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	code, report = checkRunJSON(t, noIdentity, dns, roots, "--room", alias, nameA)
	if code != 0 || len(stepsNamed(report, stepRoomAlias)) != 1 || oneStep(t, report, stepRoomAlias).Status != checkSkip {
		t.Fatalf("alias without identity: exit %d, steps %+v", code, report.Steps)
	}
}

// TestCheck_Usage covers the arguments: exit 2 for usage errors, flags
// on either side of the name, and a server name that is not one.
func TestCheck_Usage(t *testing.T) {
	dns := newCheckDNS()
	for _, args := range [][]string{{}, {"a.test", "b.test"}, {"--timeout", "0s", "a.test"}, {"--no-such-flag", "a.test"}} {
		if code, _, _ := checkRun(t, noIdentity, dns, nil, args...); code != 2 {
			t.Errorf("ferry check %q: exit %d, want 2", args, code)
		}
	}
	code, report := checkRunJSON(t, noIdentity, dns, nil, "not a server name")
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	wantStatus(t, oneStep(t, report, stepServerName), checkFail, "is not a valid server name")
	if _, _, errOut := checkRun(t, map[string]string{"FERRY_SERVER_NAME": "b.test", "FERRY_DATA_DIR": t.TempDir()}, dns, nil,
		"--room", "!r:a.test", "a.test"); !strings.Contains(errOut, "has no signing key yet") {
		t.Fatalf("identity without a key: stderr %q", errOut)
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		24 * time.Hour: "24h", 90 * time.Minute: "1h30m", 5 * time.Minute: "5m", 61 * time.Second: "1m1s", 0: "0s",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

// TestTerminalSafe: text from remote servers cannot carry terminal
// control sequences into the human output.
func TestTerminalSafe(t *testing.T) {
	if got := terminalSafe("ok ✓ \x1b[31mred\x07\n\u009b"); got != `ok ✓ \x1b[31mred\x07\x0a\x9b` {
		t.Fatalf("terminalSafe = %q", got)
	}
}

// TestCheck_KeyValidity: a key document whose valid_until_ts has passed
// fails the check; one valid for longer than receivers trust is noted.
func TestCheck_KeyValidity(t *testing.T) {
	pki := newCheckPKI(t)
	dns := newCheckDNS()
	stale := newCheckFerry(t, "stale.test")
	// Signed two days ago for a day: expired a day ago.
	stale.Now = func() time.Time { return time.Now().Add(-48 * time.Hour) }
	dns.mapHost("stale.test", 8448, openCheckFerry(t, stale, pki.issue(t, "stale.test")))
	long := newCheckFerry(t, "long.test")
	long.KeyValidity = 30 * 24 * time.Hour
	dns.mapHost("long.test", 8448, openCheckFerry(t, long, pki.issue(t, "long.test")))

	code, report := checkRunJSON(t, noIdentity, dns, pki.pool, "stale.test")
	if code != 1 {
		t.Fatalf("expired keys: exit %d", code)
	}
	wantStatus(t, oneStep(t, report, stepServerKeys), checkFail, "EXPIRED")

	code, report = checkRunJSON(t, noIdentity, dns, pki.pool, "long.test")
	if code != 0 {
		t.Fatalf("long-lived keys: exit %d", code)
	}
	wantStatus(t, oneStep(t, report, stepServerKeys), checkOK, "servers trust it for 7 days at most")
}
