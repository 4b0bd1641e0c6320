package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// SendTransactionBody sends one transaction to destination (PUT /send)
// with the body exactly as the caller built it ({"origin",
// "origin_server_ts", "pdus", "edus"}, as canonical JSON, which is signed
// as it is), so that a retry carries the same transaction ID and contents. It returns the per-PDU errors of the
// answer: every event ID it lists, with "" for accepted events. It is the
// outbound delivery's transport.
func (c *Client) SendTransactionBody(ctx context.Context, destination, txnID string, body []byte) (map[string]string, error) {
	if txnID == "" {
		return nil, fmt.Errorf("send to %s: empty transaction ID", destination)
	}
	raw, err := c.Do(ctx, Request{
		Method: http.MethodPut, Destination: destination,
		Path: "/_matrix/federation/v1/send/" + url.PathEscape(txnID), Body: json.RawMessage(body), CanonicalBody: true,
	})
	if err != nil {
		return nil, err
	}
	var answer struct {
		PDUs map[string]pduResult `json:"pdus"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return nil, fmt.Errorf("send to %s: answer: %w", destination, err)
	}
	out := make(map[string]string, len(answer.PDUs))
	for id, res := range answer.PDUs {
		out[id] = res.Error
	}
	return out, nil
}

// RetryAfter is the wait the destination asked for in its answer
// (retry_after_ms, as with 429 M_LIMIT_EXCEEDED); zero when none. The
// outbound delivery waits at least this long before retrying.
func (e *HTTPError) RetryAfter() time.Duration {
	return time.Duration(max(e.RetryAfterMS, 0)) * time.Millisecond
}
