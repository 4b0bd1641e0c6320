package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-matrix/ferry/federation"
	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
)

// checkStatus is the outcome of one step of `ferry check`.
type checkStatus string

const (
	// checkOK: the step found what federation needs.
	checkOK checkStatus = "ok"
	// checkWarn: federation works, but something is off or deprecated.
	checkWarn checkStatus = "warn"
	// checkFail: federation with the server would not work because of it.
	checkFail checkStatus = "fail"
	// checkSkip: the step could not or need not run.
	checkSkip checkStatus = "skip"
	// checkInfo: a finding that is neither good nor bad (no delegation, no
	// SRV record).
	checkInfo checkStatus = "info"
)

// Step names, stable for --json consumers.
const (
	stepServerName = "server_name"
	stepWellKnown  = "well_known"
	stepSRV        = "srv"
	stepResolution = "resolution"
	stepAddresses  = "addresses"
	stepTLS        = "tls"
	stepServerKeys = "server_keys"
	stepVersion    = "version"
	stepRoomAlias  = "room_alias"
	stepMakeJoin   = "make_join"
)

// checkStep is one line of the report.
type checkStep struct {
	Name    string         `json:"name"`
	Status  checkStatus    `json:"status"`
	Summary string         `json:"summary"`
	Details map[string]any `json:"details,omitempty"`
	// lines are indented detail lines of the human output (a
	// certificate chain); --json has the same facts in Details.
	lines []string
}

// checkResolution is where requests for the server go, in the report.
type checkResolution struct {
	Delegated     bool     `json:"delegated"`
	Via           string   `json:"via"`
	HostHeader    string   `json:"host_header"`
	TLSServerName string   `json:"tls_server_name"`
	SNI           string   `json:"sni"` // empty for IP addresses: no SNI is sent
	Targets       []string `json:"targets"`
}

// checkReport is the whole result of `ferry check`; --json prints it.
type checkReport struct {
	ServerName string `json:"server_name"`
	// OK is true when federation with the server would work: no step
	// failed.
	OK      bool   `json:"ok"`
	Verdict string `json:"verdict"`
	// Origin is the server name requests were signed as, when a local
	// Ferry identity was available.
	Origin     string           `json:"origin,omitempty"`
	Insecure   bool             `json:"insecure"`
	Resolution *checkResolution `json:"resolution,omitempty"`
	Steps      []checkStep      `json:"steps"`
}

// checkIdentity is the server `ferry check` signs requests as: a local
// Ferry's name and keys, which the target can fetch.
type checkIdentity struct {
	serverName string
	keys       *keys.Own
}

// checkOptions configures one run of the checker.
type checkOptions struct {
	serverName string
	room       string // room ID or alias for make_join; empty skips it
	insecure   bool   // continue past certificate failures
	timeout    time.Duration
	caFile     string
	identity   *checkIdentity // nil: no signing identity, make_join is skipped

	// Test seams: the resolver maps names to loopback listeners, roots
	// replace the system CA pool, now is the clock.
	resolver federation.Resolver
	roots    *x509.CertPool
	now      func() time.Time
}

// unknownOrigin is the origin of the throwaway identity used when no
// local Ferry is configured: only unauthenticated requests go out then,
// and the .invalid TLD can never name a real server.
const unknownOrigin = "ferry-check.invalid"

// checkUserLocalpart is the user make_join asks a template for; make_join
// changes nothing on the remote server.
const checkUserLocalpart = "ferry-check"

// Certificates expiring sooner than this are reported as a warning.
const certExpiryWarning = 14 * 24 * time.Hour

// checker runs the steps of `ferry check` and collects the report.
type checker struct {
	opts   checkOptions
	client *federation.Client
	roots  *x509.CertPool
	report checkReport
}

// runCheck checks opts.serverName step by step. It returns the report;
// an error only when the check itself could not be set up.
func runCheck(ctx context.Context, opts checkOptions) (*checkReport, error) {
	if opts.resolver == nil {
		opts.resolver = federation.SystemResolver{}
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.timeout <= 0 {
		opts.timeout = defaultCheckTimeout
	}
	roots, err := checkRoots(opts.roots, opts.caFile)
	if err != nil {
		return nil, err
	}
	origin, own := unknownOrigin, (*keys.Own)(nil)
	if opts.identity != nil {
		origin, own = opts.identity.serverName, opts.identity.keys
	} else {
		k, err := keys.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("throwaway signing key: %w", err)
		}
		own = &keys.Own{Current: []keys.PrivateKey{k}}
	}
	client, err := federation.NewClient(federation.ClientConfig{
		ServerName:         origin,
		Keys:               own,
		Resolver:           opts.resolver,
		RootCAs:            roots,
		InsecureSkipVerify: opts.insecure,
		// The checker reports private addresses as a warning instead of
		// refusing them, so servers on a LAN or loopback can be checked.
		AllowPrivateAddresses: true,
		ConnectTimeout:        opts.timeout,
		ResponseHeaderTimeout: opts.timeout,
		RequestTimeout:        opts.timeout,
		Now:                   opts.now,
	})
	if err != nil {
		return nil, err
	}
	defer client.Close()

	c := &checker{opts: opts, client: client, roots: roots}
	c.report.ServerName = opts.serverName
	c.report.Insecure = opts.insecure
	if opts.identity != nil {
		c.report.Origin = opts.identity.serverName
	}
	c.run(ctx)
	c.conclude()
	return &c.report, nil
}

// checkRoots is the pool certificates are verified against: the given
// one (tests) or the system's, plus caFile.
func checkRoots(given *x509.CertPool, caFile string) (*x509.CertPool, error) {
	var roots *x509.CertPool
	if given != nil {
		roots = given.Clone()
	} else {
		system, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("system CA roots: %w", err)
		}
		roots = system
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", caFile)
		}
	}
	return roots, nil
}

func (c *checker) add(s checkStep) { c.report.Steps = append(c.report.Steps, s) }

// run performs the steps in order; later steps are skipped when an
// earlier one leaves nothing to talk to.
func (c *checker) run(ctx context.Context) {
	name := c.opts.serverName
	if _, err := rooms.ParseServerName(name); err != nil {
		c.add(checkStep{Name: stepServerName, Status: checkFail, Summary: fmt.Sprintf("%q is not a valid server name: %v", name, err)})
		return
	}
	host, port, hasPort := splitServerName(name)
	_, ipErr := netip.ParseAddr(host)
	isIP := ipErr == nil
	nameStep := checkStep{Name: stepServerName, Status: checkOK,
		Details: map[string]any{"host": host, "ip_literal": isIP, "explicit_port": hasPort}}
	switch {
	case isIP:
		nameStep.Summary = fmt.Sprintf("%s is an IP literal: no .well-known, no SRV (spec step 1)", name)
		c.report.Steps = append(c.report.Steps, nameStep)
		c.add(checkStep{Name: stepWellKnown, Status: checkSkip, Summary: "not consulted for IP literals"})
	case hasPort:
		nameStep.Summary = fmt.Sprintf("%s has an explicit port %s: no .well-known, no SRV (spec step 2)", name, port)
		c.report.Steps = append(c.report.Steps, nameStep)
		c.add(checkStep{Name: stepWellKnown, Status: checkSkip, Summary: "not consulted for names with an explicit port"})
	default:
		nameStep.Summary = fmt.Sprintf("%s is a hostname without port: .well-known, then SRV, then port 8448", name)
		c.report.Steps = append(c.report.Steps, nameStep)
	}

	res, ok := c.resolve(ctx, name)
	if !ok {
		return
	}
	addrs := c.addresses(ctx, res)
	usable := c.tlsSteps(ctx, res, addrs)
	if usable == 0 {
		reason := "no address answered TLS"
		switch {
		case len(addrs) == 0:
			reason = "no address to connect to"
		case !c.opts.insecure:
			reason = "no address answered with a valid certificate (--insecure goes on regardless)"
		}
		for _, s := range []string{stepServerKeys, stepVersion} {
			c.add(checkStep{Name: s, Status: checkSkip, Summary: "skipped: " + reason})
		}
		if c.opts.room != "" {
			c.add(checkStep{Name: stepMakeJoin, Status: checkSkip, Summary: "skipped: " + reason})
		}
		return
	}
	c.serverKeys(ctx)
	c.version(ctx)
	if c.opts.room != "" {
		c.makeJoin(ctx)
	}
}

// resolve runs Ferry's own server discovery with a trace attached, and
// reports the .well-known and SRV steps it took and where it ends up.
func (c *checker) resolve(ctx context.Context, name string) (federation.Resolution, bool) {
	var wellKnown []federation.WellKnownInfo
	var srv []federation.SRVInfo
	trace := &federation.DiscoveryTrace{
		WellKnown: func(i federation.WellKnownInfo) { wellKnown = append(wellKnown, i) },
		SRV:       func(i federation.SRVInfo) { srv = append(srv, i) },
	}
	rctx, cancel := context.WithTimeout(federation.WithDiscoveryTrace(ctx, trace), 2*c.opts.timeout)
	defer cancel()
	res, err := c.client.Resolve(rctx, name)
	for _, wk := range wellKnown {
		c.add(wellKnownStep(wk))
	}
	for _, s := range srv {
		c.add(srvStep(s))
	}
	if err != nil {
		c.add(checkStep{Name: stepResolution, Status: checkFail, Summary: "server discovery failed: " + err.Error()})
		return res, false
	}
	if len(srv) == 0 {
		// Discovery looks SRV up for every hostname without a port.
		c.add(checkStep{Name: stepSRV, Status: checkSkip, Summary: "not consulted: the name to connect to is an IP literal or has a port"})
	}

	sni := res.TLSServerName
	if _, err := netip.ParseAddr(sni); err == nil {
		sni = "" // crypto/tls sends no SNI for an IP address, as the spec asks
	}
	c.report.Resolution = &checkResolution{
		Delegated: res.Delegated, Via: res.Via, HostHeader: res.Host,
		TLSServerName: res.TLSServerName, SNI: sni, Targets: res.Targets,
	}
	how := map[string]string{
		"ip":             "IP literal",
		"port":           "explicit port",
		"srv:matrix-fed": "SRV _matrix-fed._tcp",
		"srv:matrix":     "SRV _matrix._tcp (deprecated)",
		"default-port":   "default port 8448",
	}[res.Via]
	if res.Delegated {
		how = "delegated by .well-known, then " + how
	}
	sniText := sni
	if sniText == "" {
		sniText = "none (IP address)"
	}
	c.add(checkStep{Name: stepResolution, Status: checkOK,
		Summary: fmt.Sprintf("connect to %s (%s); Host: %s; certificate must be valid for %s; SNI: %s",
			strings.Join(res.Targets, ", "), how, res.Host, res.TLSServerName, sniText),
		Details: map[string]any{"via": res.Via, "delegated": res.Delegated, "targets": res.Targets,
			"host_header": res.Host, "tls_server_name": res.TLSServerName, "sni": sni},
	})
	return res, true
}

// maxShownBody bounds the .well-known body quoted in the report.
const maxShownBody = 512

// wellKnownStep reports one /.well-known/matrix/server lookup. A failed
// lookup is never fatal by itself: discovery goes on with SRV and 8448.
func wellKnownStep(wk federation.WellKnownInfo) checkStep {
	url := wk.URL
	if url == "" {
		url = "https://" + wk.Host + "/.well-known/matrix/server"
	}
	body := string(wk.Body)
	if len(body) > maxShownBody {
		body = body[:maxShownBody] + "..."
	}
	s := checkStep{Name: stepWellKnown, Details: map[string]any{
		"url": url, "status": wk.Status, "cache_control": wk.CacheControl, "content_type": wk.ContentType, "body": body,
	}}
	switch {
	case wk.Err == nil:
		s.Status = checkOK
		s.Summary = fmt.Sprintf("%s → %d, m.server %q (Ferry caches it for %s", url, wk.Status, wk.Delegate, shortDuration(wk.TTL))
		if wk.CacheControl != "" {
			s.Summary += "; Cache-Control: " + wk.CacheControl
		}
		s.Summary += ")"
		s.Details["m.server"] = wk.Delegate
		s.Details["cache_seconds"] = int64(wk.TTL / time.Second)
	case wk.Status == http.StatusNotFound:
		s.Status = checkInfo
		s.Summary = fmt.Sprintf("%s → 404: no delegation", url)
	case wk.Status == 0 && !isCertificateError(wk.Err):
		s.Status = checkInfo
		s.Summary = fmt.Sprintf("%s not reachable, so no delegation: %v", url, wk.Err)
	case wk.Status == http.StatusOK:
		s.Status = checkWarn
		s.Summary = fmt.Sprintf("%s → 200 but unusable, so it is ignored (servers fall back to SRV and 8448): %v", url, wk.Err)
	default:
		s.Status = checkWarn
		s.Summary = fmt.Sprintf("%s is ignored (servers fall back to SRV and 8448): %v", url, wk.Err)
	}
	if wk.Err != nil {
		s.Details["error"] = wk.Err.Error()
		if wk.Status != 0 && body != "" {
			s.lines = []string{"body: " + body}
		}
	}
	return s
}

// srvStep reports one SRV lookup.
func srvStep(info federation.SRVInfo) checkStep {
	record := "_" + info.Service + "._tcp." + info.Name
	s := checkStep{Name: stepSRV, Details: map[string]any{"record": record}}
	var targets []string
	for _, r := range info.Records {
		t := strings.TrimSuffix(r.Target, ".")
		if t == "" || r.Port == 0 {
			continue
		}
		targets = append(targets, fmt.Sprintf("%s (priority %d, weight %d)", net.JoinHostPort(t, strconv.Itoa(int(r.Port))), r.Priority, r.Weight))
	}
	s.Details["targets"] = targets
	switch {
	case info.Err != nil || len(info.Records) == 0:
		s.Status = checkInfo
		s.Summary = record + ": no record"
		var dnsErr *net.DNSError
		if info.Err != nil && !(errors.As(info.Err, &dnsErr) && dnsErr.IsNotFound) {
			s.Summary += " (" + info.Err.Error() + ")"
		}
	case len(targets) == 0:
		s.Status = checkInfo
		s.Summary = record + `: target "." (service explicitly not offered)`
	case info.Service == "matrix":
		s.Status = checkWarn
		s.Summary = record + " → " + strings.Join(targets, ", ") + "; this record is deprecated, publish _matrix-fed._tcp instead"
	default:
		s.Status = checkOK
		s.Summary = record + " → " + strings.Join(targets, ", ")
	}
	return s
}

// resolvedTarget is one host:port target with the addresses it resolved
// to.
type resolvedTarget struct {
	target string
	addrs  []netip.AddrPort
}

// addresses resolves each target to IP addresses, as the dialer will.
func (c *checker) addresses(ctx context.Context, res federation.Resolution) []resolvedTarget {
	var out []resolvedTarget
	for _, target := range res.Targets {
		host, portStr, err := net.SplitHostPort(target)
		if err != nil {
			c.add(checkStep{Name: stepAddresses, Status: checkFail, Summary: fmt.Sprintf("%s: %v", target, err)})
			continue
		}
		port, _ := strconv.ParseUint(portStr, 10, 16)
		lctx, cancel := context.WithTimeout(ctx, c.opts.timeout)
		addrs, err := c.opts.resolver.LookupHostPort(lctx, host, uint16(port))
		cancel()
		if err == nil && len(addrs) == 0 {
			err = errors.New("no addresses")
		}
		if err != nil {
			c.add(checkStep{Name: stepAddresses, Status: checkFail, Summary: fmt.Sprintf("%s: A/AAAA lookup failed: %v", target, err),
				Details: map[string]any{"target": target, "error": err.Error()}})
			continue
		}
		list := make([]string, len(addrs))
		var private []string
		for i, a := range addrs {
			list[i] = a.String()
			if isNonPublic(a.Addr()) {
				private = append(private, a.Addr().String())
			}
		}
		s := checkStep{Name: stepAddresses, Status: checkOK, Summary: fmt.Sprintf("%s → %s", target, strings.Join(list, ", ")),
			Details: map[string]any{"target": target, "addresses": list}}
		if len(private) > 0 {
			s.Status = checkWarn
			s.Summary += fmt.Sprintf("; %s not public: servers on the internet cannot reach it, and Ferry refuses it unless federation.allow_private_addresses is on",
				strings.Join(private, ", "))
			s.Details["non_public"] = private
		}
		c.add(s)
		out = append(out, resolvedTarget{target: target, addrs: addrs})
	}
	return out
}

// isNonPublic reports loopback, private, link-local and unspecified
// addresses.
func isNonPublic(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsLinkLocalMulticast()
}

// serverKeys fetches GET /_matrix/key/v2/server and checks it as Ferry's
// key ring would: the right server_name, every key's self-signature.
func (c *checker) serverKeys(ctx context.Context) {
	name := c.opts.serverName
	raw, err := c.client.FetchServerKeys(ctx, name)
	if err != nil {
		c.add(checkStep{Name: stepServerKeys, Status: checkFail, Summary: "GET /_matrix/key/v2/server failed: " + err.Error(),
			Details: map[string]any{"error": err.Error()}})
		return
	}
	now := c.opts.now()
	doc, err := keys.ParseServerKeys(raw, name, now.UnixMilli())
	if err != nil {
		c.add(checkStep{Name: stepServerKeys, Status: checkFail, Summary: "key document rejected: " + err.Error(),
			Details: map[string]any{"error": err.Error()}})
		return
	}
	ids := make([]string, 0, len(doc.VerifyKeys))
	verify := map[string]string{}
	for id, pub := range doc.VerifyKeys {
		ids = append(ids, id)
		verify[id] = rooms.EncodeBase64(pub)
	}
	sort.Strings(ids)
	old := map[string]any{}
	var oldIDs []string
	for id, k := range doc.OldVerifyKeys {
		oldIDs = append(oldIDs, id)
		old[id] = map[string]any{"key": rooms.EncodeBase64(k.Public), "expired_ts": k.ExpiredTS}
	}
	sort.Strings(oldIDs)
	validUntil := time.UnixMilli(doc.ValidUntilTS).UTC()
	s := checkStep{Name: stepServerKeys, Status: checkOK, Details: map[string]any{
		"verify_keys": verify, "old_verify_keys": old, "valid_until_ts": doc.ValidUntilTS,
		"valid_until": validUntil.Format(time.RFC3339), "signatures_verified": ids,
	}}
	s.Summary = fmt.Sprintf("%s self-signed and verified; valid until %s", strings.Join(ids, ", "), validUntil.Format(time.RFC3339))
	switch left := validUntil.Sub(now); {
	case left <= 0:
		s.Status = checkFail
		s.Summary += fmt.Sprintf(" — EXPIRED %s ago: servers will not accept its signatures on new events", roundDuration(-left))
	case left > time.Duration(keys.MaxValidityMS)*time.Millisecond:
		s.Summary += " (more than 7 days ahead: servers trust it for 7 days at most)"
	case left < time.Hour:
		s.Status = checkWarn
		s.Summary += fmt.Sprintf(" — only %s left: servers will refetch constantly", roundDuration(left))
	}
	if len(oldIDs) > 0 {
		s.Summary += "; old keys: " + strings.Join(oldIDs, ", ")
	}
	c.add(s)
}

// version calls GET /_matrix/federation/v1/version.
func (c *checker) version(ctx context.Context) {
	raw, err := c.client.Do(ctx, federation.Request{Method: http.MethodGet, Destination: c.opts.serverName,
		Path: "/_matrix/federation/v1/version", Unauthenticated: true, MaxResponseBytes: 64 << 10})
	if err != nil {
		c.add(checkStep{Name: stepVersion, Status: checkFail, Summary: "GET /_matrix/federation/v1/version failed: " + err.Error(),
			Details: map[string]any{"error": err.Error()}})
		return
	}
	var body struct {
		Server struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"server"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		c.add(checkStep{Name: stepVersion, Status: checkWarn, Summary: "version answer is not the expected JSON: " + err.Error()})
		return
	}
	c.add(checkStep{Name: stepVersion, Status: checkOK,
		Summary: fmt.Sprintf("%s %s", orUnknown(body.Server.Name), orUnknown(body.Server.Version)),
		Details: map[string]any{"name": body.Server.Name, "version": body.Server.Version}})
}

// makeJoin asks the server for a join template for a test user, after
// resolving an alias. Both requests are authenticated, so they need an
// origin the target can fetch keys from: a local Ferry's identity.
func (c *checker) makeJoin(ctx context.Context) {
	room := c.opts.room
	if c.opts.identity == nil {
		why := "make_join (and /query/directory for aliases) must be signed by a server the target can fetch keys from; " +
			"run ferry check where a Ferry is configured (-config, ./ferry.toml or FERRY_SERVER_NAME) to sign as it"
		if strings.HasPrefix(room, "#") {
			c.add(checkStep{Name: stepRoomAlias, Status: checkSkip, Summary: "skipped: no signing identity"})
		}
		c.add(checkStep{Name: stepMakeJoin, Status: checkSkip, Summary: "skipped: " + why})
		return
	}
	roomID := room
	if strings.HasPrefix(room, "#") {
		entry, err := c.client.QueryDirectory(ctx, room)
		if err != nil {
			c.add(checkStep{Name: stepRoomAlias, Status: checkFail, Summary: fmt.Sprintf("%s: %v%s", room, err, authHint(err, c.report.Origin)),
				Details: map[string]any{"alias": room, "error": err.Error()}})
			c.add(checkStep{Name: stepMakeJoin, Status: checkSkip, Summary: "skipped: the alias did not resolve"})
			return
		}
		s := checkStep{Name: stepRoomAlias, Status: checkOK,
			Summary: fmt.Sprintf("%s → %s (servers: %s)", room, entry.RoomID, strings.Join(entry.Servers, ", ")),
			Details: map[string]any{"alias": room, "room_id": entry.RoomID, "servers": entry.Servers}}
		if !containsString(entry.Servers, c.opts.serverName) {
			s.Status = checkWarn
			s.Summary += fmt.Sprintf("; %s is not among the servers to join through", c.opts.serverName)
		}
		c.add(s)
		roomID = entry.RoomID
	} else if !strings.HasPrefix(room, "!") {
		c.add(checkStep{Name: stepMakeJoin, Status: checkFail, Summary: fmt.Sprintf("%q is neither a room ID (!...) nor an alias (#...)", room)})
		return
	}

	userID := "@" + checkUserLocalpart + ":" + c.report.Origin
	versions := rooms.SupportedVersionIDs()
	roomVersion, template, err := c.client.MakeJoin(ctx, c.opts.serverName, roomID, userID, versions)
	details := map[string]any{"room_id": roomID, "user_id": userID}
	if err != nil {
		details["error"] = err.Error()
		var herr *federation.HTTPError
		if errors.As(err, &herr) {
			details["status"], details["errcode"] = herr.Status, herr.ErrCode
		}
		c.add(checkStep{Name: stepMakeJoin, Status: checkFail, Summary: fmt.Sprintf("make_join for %s in %s: %v%s", userID, roomID, err, makeJoinHint(err, c.report.Origin)),
			Details: details})
		return
	}
	details["room_version"] = roomVersion
	s := checkStep{Name: stepMakeJoin, Status: checkOK, Details: details}
	problem := checkJoinTemplate(template, roomID, userID)
	if problem != "" {
		s.Status = checkFail
		s.Summary = fmt.Sprintf("make_join answered room version %s but the template is unusable: %s", roomVersion, problem)
	} else {
		s.Summary = fmt.Sprintf("joining %s would work: room version %s, template for %s", roomID, roomVersion, userID)
	}
	c.add(s)
}

// checkJoinTemplate returns what is wrong with a make_join template, or
// "".
func checkJoinTemplate(template []byte, roomID, userID string) string {
	var ev struct {
		Type     string `json:"type"`
		StateKey string `json:"state_key"`
		Sender   string `json:"sender"`
		RoomID   string `json:"room_id"`
		Content  struct {
			Membership string `json:"membership"`
		} `json:"content"`
	}
	if err := json.Unmarshal(template, &ev); err != nil {
		return "not a JSON object: " + err.Error()
	}
	switch {
	case ev.Type != "m.room.member":
		return fmt.Sprintf("type is %q, not m.room.member", ev.Type)
	case ev.StateKey != userID || ev.Sender != userID:
		return fmt.Sprintf("state_key %q / sender %q are not %s", ev.StateKey, ev.Sender, userID)
	case ev.Content.Membership != "join":
		return fmt.Sprintf("content.membership is %q, not join", ev.Content.Membership)
	case ev.RoomID != "" && ev.RoomID != roomID:
		return fmt.Sprintf("room_id is %q", ev.RoomID)
	}
	return ""
}

// authHint explains an authentication refusal of a signed request.
func authHint(err error, origin string) string {
	var herr *federation.HTTPError
	if errors.As(err, &herr) && (herr.Status == http.StatusUnauthorized || herr.ErrCode == "M_UNAUTHORIZED") {
		return fmt.Sprintf(" (the target could not verify our signature: it must reach %s to fetch its keys)", origin)
	}
	return ""
}

// makeJoinHint explains the usual make_join refusals.
func makeJoinHint(err error, origin string) string {
	if h := authHint(err, origin); h != "" {
		return h
	}
	var herr *federation.HTTPError
	if !errors.As(err, &herr) {
		return ""
	}
	switch herr.ErrCode {
	case "M_FORBIDDEN":
		return " (the room refuses the join: not public, no invite, or a server ACL)"
	case "M_NOT_FOUND":
		return " (the server is not in that room)"
	case "M_INCOMPATIBLE_ROOM_VERSION", "M_UNSUPPORTED_ROOM_VERSION":
		return " (the room's version is not one Ferry speaks)"
	}
	return ""
}

// conclude sets the verdict: federation works when no step failed.
func (c *checker) conclude() {
	var failed []checkStep
	warnings := 0
	for _, s := range c.report.Steps {
		switch s.Status {
		case checkFail:
			failed = append(failed, s)
		case checkWarn:
			warnings++
		}
	}
	name := c.opts.serverName
	if len(failed) > 0 {
		c.report.OK = false
		c.report.Verdict = fmt.Sprintf("federation with %s would NOT work: %s: %s", name, failed[0].Name, failed[0].Summary)
		if len(failed) > 1 {
			c.report.Verdict += fmt.Sprintf(" (and %d more failed steps)", len(failed)-1)
		}
		for _, s := range c.report.Steps {
			if s.Name == stepWellKnown && s.Status == checkWarn {
				c.report.Verdict += "; the .well-known delegation was unusable, which may be why"
				break
			}
		}
		return
	}
	c.report.OK = true
	c.report.Verdict = fmt.Sprintf("federation with %s should work", name)
	if warnings > 0 {
		c.report.Verdict += fmt.Sprintf(", with %d warning(s) above", warnings)
	}
	if c.opts.insecure {
		c.report.Verdict += " (certificates were not required to verify: --insecure)"
	}
}

// splitServerName splits a server name into host (no brackets) and port.
func splitServerName(name string) (host, port string, hasPort bool) {
	if strings.HasPrefix(name, "[") {
		end := strings.IndexByte(name, ']')
		if end < 0 {
			return name, "", false
		}
		host, rest := name[1:end], name[end+1:]
		if strings.HasPrefix(rest, ":") {
			return host, rest[1:], true
		}
		return host, "", false
	}
	if h, p, ok := strings.Cut(name, ":"); ok {
		return h, p, true
	}
	return name, "", false
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// shortDuration prints whole hours and minutes without the zero units
// ("24h", "1h30m", "5m").
func shortDuration(d time.Duration) string {
	out := d.Round(time.Second).String()
	if strings.HasSuffix(out, "m0s") {
		out = strings.TrimSuffix(out, "0s")
	}
	if strings.HasSuffix(out, "h0m") {
		out = strings.TrimSuffix(out, "0m")
	}
	return out
}

// roundDuration shortens a duration for messages.
func roundDuration(d time.Duration) time.Duration {
	if d > time.Hour {
		return d.Round(time.Minute)
	}
	return d.Round(time.Second)
}
