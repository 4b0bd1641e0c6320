package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
)

// maxInboundBody bounds the bodies our fake servers read.
const maxInboundBody = 8 << 20

// keyFetchTimeout bounds fetching a peer's key document.
const keyFetchTimeout = 30 * time.Second

// fakeServer is one homeserver this process pretends to be: a server name
// of the form host:port naming its own TLS listener, a freshly generated
// signing key published at /_matrix/key/v2/server, and the routes its role
// adds.
type fakeServer struct {
	Name   string
	Key    keys.PrivateKey
	Own    *keys.Own
	Signer rooms.SigningKey
	Mux    *http.ServeMux

	ln     net.Listener
	srv    *http.Server
	done   chan struct{}
	keyDoc []byte
}

// startFakeServer opens a listener on bind (host or host:port; port 0 or
// none picks a free one), names the server after the address it got, and
// serves the key and version endpoints plus whatever the caller adds to
// Mux before or after. cert is the TLS certificate all fake servers share.
func startFakeServer(bind string, cert tls.Certificate) (*fakeServer, error) {
	key, err := keys.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return startFakeServerWithKey(bind, cert, key)
}

// startFakeServerWithKey is startFakeServer with a given signing key, for
// a server name coming back with the key its events were signed with.
func startFakeServerWithKey(bind string, cert tls.Certificate, key keys.PrivateKey) (*fakeServer, error) {
	if !strings.Contains(bind, ":") {
		bind += ":0"
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", bind, err)
	}
	name := ln.Addr().String()
	own := &keys.Own{Current: []keys.PrivateKey{key}}
	// Valid for a day: far longer than any run, short enough that a
	// target keeping it cached does not trust a dead test key for long.
	doc, err := keys.ServerKeyDocument(name, own, time.Now().Add(24*time.Hour).UnixMilli())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("key document: %w", err)
	}
	s := &fakeServer{Name: name, Key: key, Own: own, Signer: own.Signer(name), Mux: http.NewServeMux(), ln: ln, done: make(chan struct{}), keyDoc: doc}
	s.Mux.HandleFunc("GET /_matrix/key/v2/server", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.keyDoc)
	})
	s.Mux.HandleFunc("GET /_matrix/key/v2/server/{keyId}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.keyDoc)
	})
	s.Mux.HandleFunc("GET /_matrix/federation/v1/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "ferry-load", "version": "1"}})
	})
	s.srv = &http.Server{
		Handler: s.Mux,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"h2", "http/1.1"},
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		defer close(s.done)
		s.srv.ServeTLS(ln, "", "")
	}()
	return s, nil
}

// Close stops the server, letting requests in progress finish for a while.
func (s *fakeServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.done
}

// selfSignedCert makes a throwaway certificate for the loopback addresses
// and localhost; targets accept it only with verification off, as test
// deployments configure.
func selfSignedCert(host string) (tls.Certificate, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "ferry-load"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	} else if ip == nil && host != "" && host != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, host)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, nil
}

// httpsClient returns the HTTP client for federation requests: TLS
// verification only when insecure is false, and a pool deep enough for
// the chosen concurrency.
func httpsClient(insecure bool, conns int) *http.Client {
	t := &http.Transport{
		Proxy:               nil,
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: insecure, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        conns + 8,
		MaxIdleConnsPerHost: conns + 8,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	return &http.Client{Transport: t, Timeout: 10 * time.Minute}
}

// signRequest returns the X-Matrix Authorization header for a request
// from key.ServerName to destination (server-server API, "Request
// Authentication"). content is the parsed JSON body or nil.
func signRequest(key rooms.SigningKey, destination, method, uri string, content any) (string, error) {
	obj := map[string]any{"method": method, "uri": uri, "origin": key.ServerName, "destination": destination}
	if content != nil {
		obj["content"] = content
	}
	if err := rooms.SignJSON(obj, key); err != nil {
		return "", fmt.Errorf("sign request %s %s: %w", method, uri, err)
	}
	sig := rooms.Signatures(obj, key.ServerName)[key.KeyID]
	return fmt.Sprintf(`X-Matrix origin="%s",destination="%s",key="%s",sig="%s"`, key.ServerName, destination, key.KeyID, sig), nil
}

// matrixError is a non-2xx federation answer.
type matrixError struct {
	Status  int
	ErrCode string
	Message string
}

func (e *matrixError) Error() string {
	if e.ErrCode != "" {
		return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.ErrCode, e.Message)
	}
	return fmt.Sprintf("HTTP %d", e.Status)
}

// fedRequest sends one signed federation request to destination (a server
// name used directly as host:port, as for IP literals and explicit ports)
// and returns the body of a 2xx answer; other statuses are *matrixError.
// body is nil or a JSON value (raw bytes are parsed, then sent canonical).
func fedRequest(ctx context.Context, hc *http.Client, key rooms.SigningKey, destination, method, path string, query url.Values, body any) ([]byte, error) {
	uri := path
	if len(query) > 0 {
		uri += "?" + query.Encode()
	}
	var content any
	var raw []byte
	if body != nil {
		b, ok := body.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(body); err != nil {
				return nil, fmt.Errorf("%s %s: encode body: %w", method, path, err)
			}
		}
		var err error
		if content, err = rooms.ParseJSON(b); err != nil {
			return nil, fmt.Errorf("%s %s: body: %w", method, path, err)
		}
		if raw, err = rooms.EncodeCanonical(content); err != nil {
			return nil, fmt.Errorf("%s %s: body: %w", method, path, err)
		}
	}
	auth, err := signRequest(key, destination, method, uri, content)
	if err != nil {
		return nil, err
	}
	return doSigned(ctx, hc, destination, method, uri, raw, auth)
}

// doSigned sends a request whose body and Authorization header were made
// beforehand.
func doSigned(ctx context.Context, hc *http.Client, destination, method, uri string, body []byte, auth string) ([]byte, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+destination+uri, rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, uri, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("User-Agent", "ferry-load")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: %w", method, uri, destination, err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: read answer: %w", method, uri, destination, err)
	}
	if resp.StatusCode/100 != 2 {
		me := &matrixError{Status: resp.StatusCode}
		var e struct {
			ErrCode string `json:"errcode"`
			Error   string `json:"error"`
		}
		if json.Unmarshal(respBody, &e) == nil {
			me.ErrCode, me.Message = e.ErrCode, e.Error
		}
		return nil, fmt.Errorf("%s %s on %s: %w", method, uri, destination, me)
	}
	return respBody, nil
}

// peerKeys fetches and caches the signing keys of servers that send us
// requests, so the fake servers check X-Matrix like a real one.
type peerKeys struct {
	hc *http.Client

	mu   sync.Mutex
	keys map[string]map[string]ed25519.PublicKey // server -> key ID -> key
}

func newPeerKeys(hc *http.Client) *peerKeys {
	return &peerKeys{hc: hc, keys: map[string]map[string]ed25519.PublicKey{}}
}

// key returns server's key keyID, fetching the server's key document
// directly when it is not known yet.
func (p *peerKeys) key(ctx context.Context, server, keyID string) (ed25519.PublicKey, error) {
	p.mu.Lock()
	k := p.keys[server][keyID]
	p.mu.Unlock()
	if k != nil {
		return k, nil
	}
	ctx, cancel := context.WithTimeout(ctx, keyFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+server+"/_matrix/key/v2/server", nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch keys of %s: %w", server, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("fetch keys of %s: %w", server, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch keys of %s: HTTP %d", server, resp.StatusCode)
	}
	doc, err := keys.ParseServerKeys(raw, server, time.Now().UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("keys of %s: %w", server, err)
	}
	p.mu.Lock()
	p.keys[server] = doc.VerifyKeys
	p.mu.Unlock()
	if k = doc.VerifyKeys[keyID]; k == nil {
		return nil, fmt.Errorf("%s publishes no key %s", server, keyID)
	}
	return k, nil
}

// VerifyKey implements rooms.KeyLookup for event signatures; the fake
// servers do not track key validity periods.
func (p *peerKeys) VerifyKey(server, keyID string, _ int64) (ed25519.PublicKey, error) {
	return p.key(context.Background(), server, keyID)
}

// inbound is an authenticated request to one of our fake servers.
type inbound struct {
	Origin string
	Body   []byte // raw body, nil when none
}

// authenticate checks the request's X-Matrix header against the origin's
// published key, as our destination; on failure it writes the Matrix
// error and returns false.
func (p *peerKeys) authenticate(w http.ResponseWriter, r *http.Request, destination string) (inbound, bool) {
	fail := func(status int, code, format string, args ...any) (inbound, bool) {
		writeJSON(w, status, map[string]string{"errcode": code, "error": fmt.Sprintf(format, args...)})
		return inbound{}, false
	}
	x, err := parseXMatrix(r.Header.Get("Authorization"))
	if err != nil {
		return fail(http.StatusUnauthorized, "M_UNAUTHORIZED", "%v", err)
	}
	if _, err := rooms.ParseServerName(x.origin); err != nil {
		return fail(http.StatusUnauthorized, "M_UNAUTHORIZED", "origin: %v", err)
	}
	if x.destination != "" && x.destination != destination {
		return fail(http.StatusUnauthorized, "M_UNAUTHORIZED", "request is for %s, not %s", x.destination, destination)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxInboundBody+1))
	if err != nil {
		return fail(http.StatusBadRequest, "M_BAD_JSON", "read body: %v", err)
	}
	if len(body) > maxInboundBody {
		return fail(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", "body larger than %d bytes", maxInboundBody)
	}
	obj := map[string]any{"method": r.Method, "uri": r.RequestURI, "origin": x.origin, "destination": destination}
	if len(body) > 0 {
		content, err := rooms.ParseJSON(body)
		if err != nil {
			return fail(http.StatusBadRequest, "M_NOT_JSON", "body: %v", err)
		}
		obj["content"] = content
	} else {
		body = nil
	}
	pub, err := p.key(r.Context(), x.origin, x.key)
	if err != nil {
		return fail(http.StatusUnauthorized, "M_UNAUTHORIZED", "origin key: %v", err)
	}
	obj["signatures"] = map[string]any{x.origin: map[string]any{x.key: x.sig}}
	if err := rooms.VerifyJSONSignature(obj, x.origin, x.key, pub); err != nil {
		return fail(http.StatusUnauthorized, "M_UNAUTHORIZED", "X-Matrix signature: %v", err)
	}
	return inbound{Origin: x.origin, Body: body}, true
}

// xMatrix is a parsed X-Matrix Authorization header.
type xMatrix struct{ origin, destination, key, sig string }

// parseXMatrix reads `X-Matrix name="value",...` (values quoted or bare).
func parseXMatrix(h string) (xMatrix, error) {
	scheme, params, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "X-Matrix") {
		return xMatrix{}, errors.New("authorization is not X-Matrix")
	}
	var x xMatrix
	for _, part := range strings.Split(params, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		value = strings.Trim(strings.TrimSpace(value), `"`)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "origin":
			x.origin = value
		case "destination":
			x.destination = value
		case "key":
			x.key = value
		case "sig":
			x.sig = value
		}
	}
	if x.origin == "" || x.key == "" || x.sig == "" {
		return xMatrix{}, errors.New("X-Matrix needs origin, key and sig")
	}
	return x, nil
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// matrixErr answers with a Matrix error.
func matrixErr(w http.ResponseWriter, status int, code, format string, args ...any) {
	writeJSON(w, status, map[string]string{"errcode": code, "error": fmt.Sprintf(format, args...)})
}
