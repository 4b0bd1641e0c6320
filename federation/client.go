package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
)

// Client defaults.
const (
	DefaultConnectTimeout        = 10 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultRequestTimeout        = 2 * time.Minute
	// DefaultMaxResponseBytes bounds a response body unless a request
	// sets its own limit. send_join answers of large rooms are the
	// biggest legitimate responses.
	DefaultMaxResponseBytes = 128 << 20
	// maxKeyResponseBytes bounds key documents and notary answers.
	maxKeyResponseBytes = 4 << 20
	// maxQueryResponseBytes bounds profile and directory answers.
	maxQueryResponseBytes = 1 << 20
	maxIdleConnsPerDest   = 4
	idleConnTimeout       = 90 * time.Second
	// maxTransports bounds the per-destination connection pools kept; the
	// least recently used one is dropped beyond it.
	maxTransports = 1024
)

// ErrServerDenied is matched when a server name is refused by the
// federation allow / deny lists, in either direction.
var ErrServerDenied = errors.New("server denied by federation policy")

// ClientConfig configures NewClient. ServerName and Keys are required.
type ClientConfig struct {
	// ServerName is our server name, the origin of every request.
	ServerName string
	// Keys are our signing keys; requests are signed with Keys.Signer.
	Keys *keys.Own
	// Resolver resolves names for discovery and dialling; nil means
	// SystemResolver{}.
	Resolver Resolver
	// RootCAs replaces the system roots when set (tests). CAFile is added
	// to whichever pool applies.
	RootCAs *x509.CertPool
	// CAFile is a PEM bundle of extra trusted CAs (federation.ca_file).
	CAFile string
	// InsecureSkipVerify turns TLS certificate verification off
	// (federation.verify_tls = false). Only for test federations; NewClient
	// logs a warning when it is set.
	InsecureSkipVerify bool
	// AllowPrivateAddresses lets requests reach loopback, private and
	// link-local addresses (federation.allow_private_addresses).
	AllowPrivateAddresses bool
	// Policy is the federation allow / deny list.
	Policy ServerPolicy
	// Timeouts; defaults above when zero.
	ConnectTimeout        time.Duration
	ResponseHeaderTimeout time.Duration
	RequestTimeout        time.Duration
	// MaxResponseBytes is the default response body limit.
	MaxResponseBytes int64
	// Logger receives a line per failed request and per dial; the zero
	// value logs nothing.
	Logger zerolog.Logger
	// Now is the clock for discovery caching; nil means time.Now.
	Now func() time.Time
}

// Client sends authenticated federation requests: it discovers where a
// server name lives (/.well-known, SRV, 8448), connects only to addresses
// the guard allows, verifies TLS for the right name, sends the right Host
// header, signs every request with X-Matrix and keeps connections per
// destination for reuse. It implements keys.Fetcher. A Client is safe for
// concurrent use.
type Client struct {
	cfg       ClientConfig
	signer    rooms.SigningKey
	tlsConfig *tls.Config
	dialer    *guardedDialer
	discovery *discovery

	mu         sync.Mutex
	transports map[string]*destTransport
	closed     bool
}

// destTransport is the connection pool of one destination.
type destTransport struct {
	*http.Transport
	lastUsed time.Time
}

var _ keys.Fetcher = (*Client)(nil)

// NewClient checks cfg, fills in defaults and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.ServerName == "" || cfg.Keys == nil || len(cfg.Keys.Current) == 0 {
		return nil, errors.New("federation client: ServerName and Keys are required")
	}
	if _, err := parseServerName(cfg.ServerName); err != nil {
		return nil, fmt.Errorf("federation client: %w", err)
	}
	if err := cfg.Policy.validate(); err != nil {
		return nil, fmt.Errorf("federation client: %w", err)
	}
	if cfg.Resolver == nil {
		cfg.Resolver = SystemResolver{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.ResponseHeaderTimeout <= 0 {
		cfg.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	roots := cfg.RootCAs
	if roots == nil {
		system, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("federation client: system CA roots: %w", err)
		}
		roots = system
	} else {
		roots = roots.Clone()
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("federation client: ca_file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("federation client: ca_file %s holds no PEM certificate", cfg.CAFile)
		}
	}
	tlsConfig := &tls.Config{
		RootCAs:            roots,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: cfg.InsecureSkipVerify, //nolint:gosec // test federations only, logged below
		NextProtos:         []string{"http/1.1"},
	}
	if cfg.InsecureSkipVerify {
		cfg.Logger.Warn().Msg("federation.verify_tls is false: outbound TLS certificates are NOT verified; " +
			"anyone on the network path can impersonate other servers. Use this only in test federations.")
	}
	if cfg.AllowPrivateAddresses {
		cfg.Logger.Warn().Msg("federation.allow_private_addresses is true: outbound requests may reach loopback and private networks")
	}

	c := &Client{
		cfg:        cfg,
		signer:     cfg.Keys.Signer(cfg.ServerName),
		tlsConfig:  tlsConfig,
		dialer:     newGuardedDialer(cfg.Resolver, addressGuard{allowPrivate: cfg.AllowPrivateAddresses}, cfg.ConnectTimeout),
		transports: map[string]*destTransport{},
	}
	wellKnownTransport := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return c.dialer.dialAddr(ctx, addr)
		},
		TLSClientConfig:        tlsConfig.Clone(),
		TLSHandshakeTimeout:    cfg.ConnectTimeout,
		ResponseHeaderTimeout:  wellKnownTimeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConnsPerHost:    1,
		IdleConnTimeout:        idleConnTimeout,
	}
	wellKnownClient := &http.Client{Transport: wellKnownTransport, CheckRedirect: checkWellKnownRedirect}
	c.discovery = newDiscovery(cfg.Resolver, wellKnownClient, cfg.Now)
	return c, nil
}

// Close drops idle connections. Requests after Close fail.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, t := range c.transports {
		t.CloseIdleConnections()
	}
	c.transports = map[string]*destTransport{}
	if t, ok := c.discovery.client.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
}

// Request is one federation request.
type Request struct {
	Method      string
	Destination string // server name, never a delegated host
	// Path is the escaped path, e.g. "/_matrix/federation/v1/query/profile".
	Path  string
	Query url.Values
	// Body is the JSON body: nil for none ({} for PUT and POST, which
	// always carry an object), []byte or json.RawMessage for raw JSON,
	// anything else is encoded with encoding/json. It is sent as canonical
	// JSON, which is what the signature covers.
	Body any
	// CanonicalBody says Body ([]byte or json.RawMessage) is canonical
	// JSON already: it is sent as it is and signed without being parsed
	// and encoded again. The caller answers for it; a body that is not
	// canonical gets a signature the destination refuses.
	CanonicalBody bool
	// Unauthenticated leaves out the X-Matrix header, for the key and
	// version endpoints.
	Unauthenticated bool
	// MaxResponseBytes overrides the client's response size limit.
	MaxResponseBytes int64
}

// HTTPError is a non-2xx answer from a remote server, with its Matrix
// error fields when the body had them.
type HTTPError struct {
	Destination  string
	Status       int
	ErrCode      string
	Message      string
	RetryAfterMS int64
}

func (e *HTTPError) Error() string {
	if e.ErrCode != "" {
		return fmt.Sprintf("%s answered %d %s: %s", e.Destination, e.Status, e.ErrCode, e.Message)
	}
	return fmt.Sprintf("%s answered %d", e.Destination, e.Status)
}

// Do sends r and returns the response body of a 2xx answer. Other
// statuses are *HTTPError. Denied destinations match ErrServerDenied;
// private addresses refused by the guard match ErrAddressRefused.
func (c *Client) Do(ctx context.Context, r Request) ([]byte, error) {
	body, err := c.do(ctx, r)
	if err != nil {
		c.cfg.Logger.Debug().Err(err).Str(fieldDestination, r.Destination).Str(fieldMethod, r.Method).Str(fieldPath, r.Path).Msg("federation request failed")
	}
	return body, err
}

// fieldDestination is the log field naming the server a request went to.
const fieldDestination = "destination"

func (c *Client) do(ctx context.Context, r Request) ([]byte, error) {
	if !c.cfg.Policy.Allowed(r.Destination) {
		return nil, fmt.Errorf("%w: %s", ErrServerDenied, r.Destination)
	}
	del, err := c.discovery.delegate(ctx, r.Destination)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, "?#") {
		return nil, fmt.Errorf("request path %q must start with / and carry no query (use Query)", r.Path)
	}
	u, err := url.Parse("https://" + del.serverName + r.Path)
	if err != nil {
		return nil, fmt.Errorf("request %s %s: %w", r.Method, r.Path, err)
	}
	u.RawQuery = r.Query.Encode()
	uri := u.RequestURI() // exactly what goes on the request line

	var content any
	var bodyBytes []byte
	if r.Body == nil && (r.Method == http.MethodPut || r.Method == http.MethodPost) {
		// Every POST and PUT carries a JSON object, possibly empty.
		r.Body = []byte(`{}`)
	}
	if r.Body != nil {
		raw, ok := r.Body.([]byte)
		if rm, isRaw := r.Body.(json.RawMessage); isRaw {
			raw, ok = rm, true
		}
		if !ok {
			if raw, err = json.Marshal(r.Body); err != nil {
				return nil, fmt.Errorf("request %s %s: encode body: %w", r.Method, r.Path, err)
			}
		}
		if ok && r.CanonicalBody {
			bodyBytes = raw
		} else {
			if content, err = rooms.ParseJSON(raw); err != nil {
				return nil, fmt.Errorf("request %s %s: body: %w", r.Method, r.Path, err)
			}
			if bodyBytes, err = rooms.EncodeCanonical(content); err != nil {
				return nil, fmt.Errorf("request %s %s: body: %w", r.Method, r.Path, err)
			}
		}
	}

	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), bytes.NewReader(bodyBytes))
	if err != nil {
		return nil, fmt.Errorf("request %s %s: %w", r.Method, r.Path, err)
	}
	if bodyBytes == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Host = del.hostHeader()
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "Ferry")
	if !r.Unauthenticated {
		var x XMatrix
		if content == nil && bodyBytes != nil {
			x, err = SignRequestCanonical(c.signer, r.Destination, r.Method, uri, bodyBytes)
		} else {
			x, err = SignRequest(c.signer, r.Destination, r.Method, uri, content)
		}
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", x.String())
	}

	t, err := c.transport(r.Destination)
	if err != nil {
		return nil, err
	}
	resp, err := t.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: %w", r.Method, r.Path, r.Destination, err)
	}
	defer resp.Body.Close()
	limit := r.MaxResponseBytes
	if limit <= 0 {
		limit = c.cfg.MaxResponseBytes
	}
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s on %s: read response: %w", r.Method, r.Path, r.Destination, err)
	}
	if int64(len(respBody)) > limit {
		return nil, fmt.Errorf("%s %s on %s: response larger than %d bytes", r.Method, r.Path, r.Destination, limit)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		herr := &HTTPError{Destination: r.Destination, Status: resp.StatusCode}
		var body struct {
			ErrCode      string `json:"errcode"`
			Error        string `json:"error"`
			RetryAfterMS int64  `json:"retry_after_ms"`
		}
		if json.Unmarshal(respBody, &body) == nil {
			herr.ErrCode, herr.Message, herr.RetryAfterMS = body.ErrCode, body.Error, body.RetryAfterMS
		}
		return nil, herr
	}
	return respBody, nil
}

// transport returns the connection pool of destination, creating it.
func (c *Client) transport(destination string) (*http.Transport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("federation client is closed")
	}
	now := time.Now()
	if t := c.transports[destination]; t != nil {
		t.lastUsed = now
		return t.Transport, nil
	}
	if len(c.transports) >= maxTransports {
		oldest := ""
		for name, t := range c.transports {
			if oldest == "" || t.lastUsed.Before(c.transports[oldest].lastUsed) {
				oldest = name
			}
		}
		// Requests still running on it finish; its idle connections go.
		c.transports[oldest].CloseIdleConnections()
		delete(c.transports, oldest)
	}
	t := &http.Transport{
		Proxy: nil,
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return c.dialDestination(ctx, destination)
		},
		ResponseHeaderTimeout:  c.cfg.ResponseHeaderTimeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConnsPerHost:    maxIdleConnsPerDest,
		IdleConnTimeout:        idleConnTimeout,
	}
	c.transports[destination] = &destTransport{Transport: t, lastUsed: now}
	return t, nil
}

// dialDestination resolves destination and opens a verified TLS
// connection to the first target that answers.
func (c *Client) dialDestination(ctx context.Context, destination string) (net.Conn, error) {
	res, err := c.discovery.resolve(ctx, destination)
	if err != nil {
		return nil, err
	}
	cfg := c.tlsConfig.Clone()
	cfg.ServerName = res.tlsServerName()
	var errs []error
	for _, target := range res.targets {
		conn, err := c.dialer.dial(ctx, target.host, target.port)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		tlsConn := tls.Client(conn, cfg)
		hctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
		err = tlsConn.HandshakeContext(hctx)
		cancel()
		if err != nil {
			conn.Close()
			errs = append(errs, fmt.Errorf("TLS with %s as %s: %w", target, cfg.ServerName, err))
			continue
		}
		c.cfg.Logger.Debug().Str(fieldDestination, destination).Str("via", res.via).
			Str("target", target.String()).Str("tls_name", cfg.ServerName).Msg("connected")
		return tlsConn, nil
	}
	return nil, fmt.Errorf("connect to %s: %w", destination, errors.Join(errs...))
}

// FetchServerKeys implements keys.Fetcher: GET /_matrix/key/v2/server on
// serverName.
func (c *Client) FetchServerKeys(ctx context.Context, serverName string) ([]byte, error) {
	return c.Do(ctx, Request{
		Method: http.MethodGet, Destination: serverName, Path: "/_matrix/key/v2/server",
		Unauthenticated: true, MaxResponseBytes: maxKeyResponseBytes,
	})
}

// QueryServerKeys implements keys.Fetcher: POST /_matrix/key/v2/query on
// notary, returning each element of server_keys.
func (c *Client) QueryServerKeys(ctx context.Context, notary string, query []keys.KeyQuery) ([][]byte, error) {
	servers := map[string]any{}
	for _, q := range query {
		ids := map[string]any{}
		for _, id := range q.KeyIDs {
			criteria := map[string]any{}
			if q.MinimumValidUntilTS > 0 {
				criteria["minimum_valid_until_ts"] = q.MinimumValidUntilTS
			}
			ids[id] = criteria
		}
		servers[q.ServerName] = ids
	}
	raw, err := c.Do(ctx, Request{
		Method: http.MethodPost, Destination: notary, Path: "/_matrix/key/v2/query",
		Body: map[string]any{"server_keys": servers}, Unauthenticated: true, MaxResponseBytes: maxKeyResponseBytes,
	})
	if err != nil {
		return nil, err
	}
	v, err := rooms.ParseJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("notary %s: %w", notary, err)
	}
	obj, _ := v.(map[string]any)
	list, ok := obj["server_keys"].([]any)
	if !ok {
		return nil, fmt.Errorf("notary %s: response has no server_keys array", notary)
	}
	out := make([][]byte, 0, len(list))
	for _, doc := range list {
		if _, ok := doc.(map[string]any); !ok {
			continue
		}
		b, err := rooms.EncodeCanonical(doc)
		if err != nil {
			return nil, fmt.Errorf("notary %s: %w", notary, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// QueryProfile asks the user's server for their profile (GET
// /_matrix/federation/v1/query/profile); field, when not empty, limits
// the answer to that field.
func (c *Client) QueryProfile(ctx context.Context, userID, field string) (map[string]any, error) {
	server, err := serverOfID(userID, '@')
	if err != nil {
		return nil, err
	}
	q := url.Values{"user_id": {userID}}
	if field != "" {
		q.Set("field", field)
	}
	raw, err := c.Do(ctx, Request{Method: http.MethodGet, Destination: server, Path: "/_matrix/federation/v1/query/profile", Query: q, MaxResponseBytes: maxQueryResponseBytes})
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil || out == nil {
		return nil, fmt.Errorf("profile of %s from %s: not a JSON object", userID, server)
	}
	return out, nil
}

// DirectoryEntry is what an alias resolves to.
type DirectoryEntry struct {
	RoomID  string   `json:"room_id"`
	Servers []string `json:"servers"`
}

// QueryDirectory asks the alias's server what it points to (GET
// /_matrix/federation/v1/query/directory).
func (c *Client) QueryDirectory(ctx context.Context, alias string) (DirectoryEntry, error) {
	server, err := serverOfID(alias, '#')
	if err != nil {
		return DirectoryEntry{}, err
	}
	raw, err := c.Do(ctx, Request{Method: http.MethodGet, Destination: server, Path: "/_matrix/federation/v1/query/directory",
		Query: url.Values{"room_alias": {alias}}, MaxResponseBytes: maxQueryResponseBytes})
	if err != nil {
		return DirectoryEntry{}, err
	}
	var out DirectoryEntry
	if err := json.Unmarshal(raw, &out); err != nil || out.RoomID == "" {
		return DirectoryEntry{}, fmt.Errorf("alias %s from %s: answer has no room_id", alias, server)
	}
	return out, nil
}

// serverOfID returns the server name of a user ID or alias (sigil,
// localpart, ':', server name).
func serverOfID(id string, sigil byte) (string, error) {
	if len(id) == 0 || id[0] != sigil {
		return "", fmt.Errorf("%q does not start with %c", truncateForError(id), sigil)
	}
	_, server, ok := strings.Cut(id, ":")
	if !ok {
		return "", fmt.Errorf("%q has no server name", truncateForError(id))
	}
	if _, err := parseServerName(server); err != nil {
		return "", err
	}
	return server, nil
}
