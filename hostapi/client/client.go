package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// PathPrefix is where every host API route lives.
const PathPrefix = "/_ferry/v1"

// dialTimeout bounds connecting to the server; the host API is local (or
// on a private network), so a connection that takes longer is a fault.
const dialTimeout = 10 * time.Second

// Client calls one Ferry host API. Build it with [New].
type Client struct {
	// address is what New was given, for error messages.
	address string
	// base is scheme://host of every request; for a unix socket the host
	// is a placeholder, as the dialer ignores it.
	base  string
	token string
	http  *http.Client
	// reconnected, when set, hears of every broken Follow stream before
	// it reconnects.
	reconnected func(err error, delay time.Duration)
}

// Option adjusts a Client built by [New].
type Option func(*Client)

// WithHTTPClient makes the Client send its requests with hc instead of its
// own http.Client. hc's transport must reach the address given to New (for
// a unix socket, New's own dialer is then not used). hc must not set a
// Timeout, which would cut long polls and streams short: use contexts.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.http = hc }
}

// WithReconnectHook makes Follow call hook each time its stream breaks,
// with the cause and the wait before the next attempt, so a program can
// tell its user.
func WithReconnectHook(hook func(err error, delay time.Duration)) Option {
	return func(c *Client) { c.reconnected = hook }
}

// New returns a client of the host API at address, authenticating with
// token. address is a base URL ("http://127.0.0.1:8009",
// "https://ferry.internal"), a host:port as in the host.listen setting
// ("127.0.0.1:8009"), or "unix:/path/to/socket".
func New(address, token string, opts ...Option) (*Client, error) {
	c := &Client{address: address, token: token}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil // the host API is private: never through a proxy
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	switch {
	case strings.HasPrefix(address, "unix:"):
		path := strings.TrimPrefix(address, "unix:")
		if path == "" {
			return nil, fmt.Errorf("host API address %q: expected unix:/path/to/socket", address)
		}
		c.base = "http://ferry-host-api"
		transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", path)
		}
	case strings.HasPrefix(address, "http://"), strings.HasPrefix(address, "https://"):
		u, err := url.Parse(address)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("host API address %q: expected http(s)://host[:port]", address)
		}
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("host API address %q: give the server's root URL, without a path", address)
		}
		c.base = u.Scheme + "://" + u.Host
		transport.DialContext = dialer.DialContext
	default:
		if _, _, err := net.SplitHostPort(address); err != nil {
			return nil, fmt.Errorf("host API address %q: expected host:port, http(s)://host[:port] or unix:/path/to/socket", address)
		}
		c.base = "http://" + address
		transport.DialContext = dialer.DialContext
	}
	c.http = &http.Client{Transport: transport}
	for _, opt := range opts {
		opt(c)
	}
	return c, nil
}

// Address returns the address the client was built with.
func (c *Client) Address() string { return c.address }

// Error is the server's refusal of a request: the HTTP status and the
// Matrix error body ({"errcode", "error"}).
type Error struct {
	Status  int    // HTTP status code
	Code    string // Matrix errcode, e.g. "M_NOT_FOUND"; "" when the body had none
	Message string // the server's explanation
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
	}
	return e.Code + ": " + e.Message
}

// UnreachableError reports a request that could not reach the server at
// all: nothing accepted the connection at Address.
type UnreachableError struct {
	Address string
	Err     error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the host API at %s: %v", e.Address, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// IsUnreachable reports whether err (or an error it wraps) is an
// [*UnreachableError].
func IsUnreachable(err error) bool {
	var u *UnreachableError
	return errors.As(err, &u)
}

// ErrorCode returns the Matrix errcode of err when it is (or wraps) an
// [*Error], and "" otherwise.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// route builds the URL of a route from path segments, each escaped on its
// own: room IDs carry '!' and ':', aliases '#', and none may be read as a
// separator.
func route(segments ...string) string {
	var b strings.Builder
	b.WriteString(PathPrefix)
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// newRequest builds an authenticated request for path (already escaped)
// with query parameters and, when body is not nil, a JSON body.
func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, body any) (*http.Request, error) {
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var reader io.Reader
	if body != nil {
		encoded, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		reader = bytes.NewReader(encoded)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, reader)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// send performs req, classifying a failure to connect as unreachable.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err == nil {
		return resp, nil
	}
	if ctxErr := req.Context().Err(); ctxErr != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, ctxErr)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return nil, &UnreachableError{Address: c.address, Err: opErr}
	}
	return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
}

// do sends a request and decodes a 2xx JSON answer into out (unless out is
// nil); any other status becomes an *Error.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	req, err := c.newRequest(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

// maxErrorBody bounds how much of a refusal's body is read: Matrix error
// bodies are short, and anything else is only quoted.
const maxErrorBody = 64 << 10

// readError turns a non-2xx response into an *Error, reading the Matrix
// error body when there is one and quoting the start of anything else.
func readError(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body struct {
		ErrCode string `json:"errcode"`
		Error   string `json:"error"`
	}
	if json.Unmarshal(raw, &body) == nil && body.ErrCode != "" {
		return &Error{Status: resp.StatusCode, Code: body.ErrCode, Message: body.Error}
	}
	message := strings.TrimSpace(string(raw))
	if len(message) > 200 {
		message = strings.ToValidUTF8(message[:200], "") + "..."
	}
	if message == "" {
		message = http.StatusText(resp.StatusCode)
	}
	return &Error{Status: resp.StatusCode, Message: message}
}
