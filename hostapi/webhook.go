package hostapi

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/homeserver"
)

// Webhook delivery.
const (
	// WebhookCursor is the name of the webhook deliverer's cursor in the
	// store: the position of the last item a 2xx acknowledged.
	WebhookCursor = "webhook"
	// SignatureHeader carries "sha256=" and the lowercase hex
	// HMAC-SHA256 of the request body keyed with the webhook secret.
	SignatureHeader = "X-Ferry-Signature"
	// DefaultWebhookMinBackoff and DefaultWebhookMaxBackoff bound the
	// wait between attempts to deliver one batch.
	DefaultWebhookMinBackoff = time.Second
	DefaultWebhookMaxBackoff = 5 * time.Minute
	// webhookBatchSize is the most items one POST carries.
	webhookBatchSize = 100
	// webhookTimeout bounds one POST, answer included.
	webhookTimeout = 30 * time.Second
	// webhookMaxAnswer is how much of an answer is read (to reuse the
	// connection) before it is dropped.
	webhookMaxAnswer = 64 << 10
)

// WebhookSignature returns the value of SignatureHeader for body signed
// with secret: "sha256=" and the lowercase hex HMAC-SHA256. A receiver
// computes it over the exact bytes it received and compares it with
// hmac.Equal.
func WebhookSignature(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// webhookBatch is the body of one webhook POST.
type webhookBatch struct {
	// TxnID is "<first pos>-<last pos>": the same batch always has the
	// same ID, so a receiver can drop a batch it already processed.
	TxnID string `json:"txn_id"`
	Items []item `json:"items"`
}

// webhookDeliverer POSTs the host event log to the webhook URL in order,
// one batch at a time, retrying a batch with exponential backoff and
// jitter until a 2xx acknowledges it, and only then moving the persisted
// cursor past it. Delivery is at least once: a batch acknowledged just
// before a crash, whose cursor was not yet stored, is sent again.
type webhookDeliverer struct {
	log        EventLog
	cursors    Cursors
	url        string
	secret     []byte
	client     *http.Client
	minBackoff time.Duration
	maxBackoff time.Duration
	logger     zerolog.Logger

	done chan struct{}
}

func newWebhookDeliverer(cfg Config) (*webhookDeliverer, error) {
	u, err := url.Parse(cfg.WebhookURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("host api: webhook URL %q must be an absolute http or https URL", cfg.WebhookURL)
	}
	if cfg.WebhookSecret == "" {
		return nil, errors.New("host api: a webhook URL needs a webhook secret to sign its requests")
	}
	if cfg.Cursors == nil {
		return nil, errors.New("host api: webhooks need Config.Cursors to remember what was delivered")
	}
	d := &webhookDeliverer{
		log:        cfg.Host,
		cursors:    cfg.Cursors,
		url:        cfg.WebhookURL,
		secret:     []byte(cfg.WebhookSecret),
		client:     cfg.WebhookClient,
		minBackoff: cfg.WebhookMinBackoff,
		maxBackoff: cfg.WebhookMaxBackoff,
		logger:     cfg.Logger,
	}
	if d.client == nil {
		d.client = &http.Client{Timeout: webhookTimeout}
	}
	if d.minBackoff <= 0 {
		d.minBackoff = DefaultWebhookMinBackoff
	}
	if d.maxBackoff <= 0 {
		d.maxBackoff = DefaultWebhookMaxBackoff
	}
	if d.maxBackoff < d.minBackoff {
		d.maxBackoff = d.minBackoff
	}
	return d, nil
}

// start runs the deliverer until ctx ends.
func (d *webhookDeliverer) start(ctx context.Context) {
	d.done = make(chan struct{})
	go d.run(ctx)
}

// wait returns once a started deliverer has stopped.
func (d *webhookDeliverer) wait() {
	if d.done != nil {
		<-d.done
	}
}

func (d *webhookDeliverer) run(ctx context.Context) {
	defer close(d.done)
	pos, ok := d.loadCursor(ctx)
	if !ok {
		return
	}
	d.logger.Info().Int64("cursor", pos).Msg("webhook delivery started")
	failures := 0
	for ctx.Err() == nil {
		items, err := d.log.Events(ctx, pos, webhookBatchSize)
		if err == nil && len(items) == 0 {
			err = d.log.WaitEvents(ctx, pos)
			if err == nil {
				continue
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.logger.Error().Err(err).Int64("cursor", pos).Msg("webhook: read the host log")
			failures++
			if !d.sleep(ctx, d.backoff(failures)) {
				return
			}
			continue
		}
		failures = 0
		if !d.deliver(ctx, items) {
			return
		}
		pos = items[len(items)-1].Pos
		// A failed write only means the batch may be sent again after a
		// restart; the next stored position covers it (cursors only move
		// forward).
		if err := d.cursors.SetCursor(ctx, WebhookCursor, pos); err != nil && ctx.Err() == nil {
			d.logger.Error().Err(err).Int64("cursor", pos).Msg("webhook: store the cursor")
		}
	}
}

// loadCursor reads the stored position, retrying while the store fails.
func (d *webhookDeliverer) loadCursor(ctx context.Context) (int64, bool) {
	for failures := 1; ; failures++ {
		pos, err := d.cursors.Cursor(ctx, WebhookCursor)
		if err == nil {
			return pos, true
		}
		if ctx.Err() != nil {
			return 0, false
		}
		d.logger.Error().Err(err).Msg("webhook: read the cursor")
		if !d.sleep(ctx, d.backoff(failures)) {
			return 0, false
		}
	}
}

// deliver POSTs one batch until a 2xx answers it; false when ctx ended
// first.
func (d *webhookDeliverer) deliver(ctx context.Context, items []homeserver.StreamItem) bool {
	batch := webhookBatch{
		TxnID: token(items[0].Pos) + "-" + token(items[len(items)-1].Pos),
		Items: wireItems(items),
	}
	body, err := json.Marshal(batch)
	if err != nil {
		// The items came from our own store; this cannot be their fault.
		d.logger.Error().Err(err).Str("txn_id", batch.TxnID).Msg("webhook: encode batch")
		return false
	}
	signature := WebhookSignature(string(d.secret), body)
	for attempt := 1; ; attempt++ {
		status, err := d.post(ctx, body, signature)
		if err == nil && status >= 200 && status < 300 {
			if attempt > 1 {
				d.logger.Info().Str("txn_id", batch.TxnID).Int("attempts", attempt).Msg("webhook batch delivered after retries")
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		wait := d.backoff(attempt)
		line := d.logger.Warn().Str("txn_id", batch.TxnID).Int("items", len(items)).Int("attempt", attempt).Dur("retry_in", wait)
		if err != nil {
			line = line.Err(err)
		} else {
			line = line.Int("status", status)
		}
		line.Msg("webhook delivery failed")
		if !d.sleep(ctx, wait) {
			return false
		}
	}
}

// post sends one attempt and returns the answer's status.
func (d *webhookDeliverer) post(ctx context.Context, body []byte, signature string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, signature)
	resp, err := d.client.Do(req)
	if err != nil {
		// Keep the reason, not the URL, which may hold credentials.
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err
		}
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, webhookMaxAnswer))
	return resp.StatusCode, nil
}

// backoff is the wait after the n-th consecutive failure (n >= 1):
// minBackoff doubled each time up to maxBackoff, then a random part of
// its upper half, so that many servers restarting together do not retry
// in step.
func (d *webhookDeliverer) backoff(n int) time.Duration {
	wait := d.minBackoff
	for i := 1; i < n && wait < d.maxBackoff; i++ {
		wait *= 2
	}
	wait = min(wait, d.maxBackoff)
	half := wait / 2
	return half + rand.N(wait-half+1)
}

// sleep waits for wait or until ctx ends; false when ctx ended.
func (d *webhookDeliverer) sleep(ctx context.Context, wait time.Duration) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
