package hostapi_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/hostapi"
)

// lockedBuffer collects log lines written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestServer_Logs: one access line per request naming the route template
// and status; webhook failures logged per attempt with their status; no
// token or secret anywhere.
func TestServer_Logs(t *testing.T) {
	rc := &receiver{t: t, failNext: 2}
	hook := httptest.NewServer(rc)
	defer hook.Close()
	var logs lockedBuffer
	n := openNode(t, t.TempDir(), "127.0.0.1:0", func(c *hostapi.Config) {
		c.Logger = zerolog.New(&logs)
		c.WebhookURL = hook.URL
		c.WebhookSecret = webhookSecret
		c.WebhookMinBackoff = time.Millisecond
		c.WebhookMaxBackoff = 5 * time.Millisecond
	})
	n.register(alice)
	n.createRoom(alice, nil) // items for the webhook
	n.requestWith(http.MethodGet, "/_ferry/v1/users", nil, http.Header{"Authorization": {"Bearer wrong-token-value"}})
	n.request(http.MethodGet, "/_ferry/v1/users/"+esc(bob), nil)
	waitFor(t, "the webhook delivery", func() bool { return len(rc.positions()) > 0 })
	n.close()

	out := logs.String()
	for _, secret := range []string{testToken, "wrong-token-value", webhookSecret} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{
		`"method":"PUT","route":"/_ferry/v1/users/{userId}","status":200`,
		`"route":"(unrouted)","status":401`,
		`"route":"/_ferry/v1/users/{userId}","status":404`,
		`"attempt":1,`, `"status":500,"message":"webhook delivery failed"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %s:\n%s", want, out)
		}
	}
	// The path, which holds user IDs, is not logged; the template is.
	if strings.Contains(out, "@bob") {
		t.Errorf("the access log holds a user ID from the path:\n%s", out)
	}
}
