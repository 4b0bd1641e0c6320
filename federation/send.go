package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Limits of one transaction (server-server API, "Transactions").
const (
	MaxTransactionPDUs = 50
	MaxTransactionEDUs = 100
)

// EDU is an ephemeral data unit of a transaction.
type EDU struct {
	Type    string          `json:"edu_type"`
	Content json.RawMessage `json:"content"`
}

// transactionBody is the part of a /send body the handler reads. PDUs are
// kept as sent: the engine parses each one under its room's version.
type transactionBody struct {
	Origin         string            `json:"origin"`
	OriginServerTS *int64            `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []EDU             `json:"edus"`
}

// pduResult is one entry of the answer's "pdus" object.
type pduResult struct {
	Error string `json:"error,omitempty"`
}

// originSerial runs the transactions of one origin one at a time, in the
// order they arrive.
type originSerial struct {
	mu    sync.Mutex
	locks map[string]*originLock
}

type originLock struct {
	mu   sync.Mutex
	refs int
}

func (o *originSerial) lock(origin string) func() {
	o.mu.Lock()
	if o.locks == nil {
		o.locks = make(map[string]*originLock)
	}
	l := o.locks[origin]
	if l == nil {
		l = &originLock{}
		o.locks[origin] = l
	}
	l.refs++
	o.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		o.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(o.locks, origin)
		}
		o.mu.Unlock()
	}
}

// handleSend answers PUT /_matrix/federation/v1/send/{txnId}: the body's
// origin must be the authenticated origin; at most 50 PDUs and 100 EDUs
// (400 M_BAD_JSON above); a transaction seen before is answered from the
// store without processing it again; transactions of one origin are
// processed in order. The answer, {"pdus": {event_id: {} or {"error"}}},
// is sent after everything accepted is committed. EDUs that are refused
// are logged and otherwise ignored. When the handler reports a PDU error
// with Internal() true (a fault of ours), the transaction fails with 500
// and no answer is stored, so the sender retries it.
func handleSend(h RoomHandler, serial *originSerial) authedHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		txnID := pathVar(r, "txnId")
		if txnID == "" {
			return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "transaction ID is empty")
		}
		var body transactionBody
		if err := json.Unmarshal(in.Body, &body); err != nil {
			return Errorf(http.StatusBadRequest, "M_BAD_JSON", "transaction body: %v", err)
		}
		if body.Origin != in.Origin {
			return Errorf(http.StatusBadRequest, "M_BAD_JSON", "transaction origin %q is not the authenticated origin %q", body.Origin, in.Origin)
		}
		if body.PDUs == nil {
			return Errorf(http.StatusBadRequest, "M_BAD_JSON", "transaction has no pdus array")
		}
		if body.OriginServerTS == nil {
			return Errorf(http.StatusBadRequest, "M_BAD_JSON", "transaction has no origin_server_ts")
		}
		if len(body.PDUs) > MaxTransactionPDUs || len(body.EDUs) > MaxTransactionEDUs {
			return Errorf(http.StatusBadRequest, "M_BAD_JSON", "transaction has %d PDUs and %d EDUs; at most %d and %d are allowed",
				len(body.PDUs), len(body.EDUs), MaxTransactionPDUs, MaxTransactionEDUs)
		}

		unlock := serial.lock(in.Origin)
		defer unlock()
		ctx := r.Context()
		if stored, found, err := h.TransactionResponse(ctx, in.Origin, txnID); err != nil {
			return fmt.Errorf("transaction %s from %s: %w", txnID, in.Origin, err)
		} else if found {
			writeRawJSON(w, http.StatusOK, stored)
			return nil
		}

		pdus := make([][]byte, len(body.PDUs))
		for i, p := range body.PDUs {
			pdus[i] = p
		}
		var verdicts map[string]error
		if tr, ok := h.(PDUTreeReceiver); ok && !in.Lenient {
			verdicts = tr.ReceivePDUTrees(ctx, in.Origin, pdus, pduTrees(in.Content, len(pdus)))
		} else {
			verdicts = h.ReceivePDUs(ctx, in.Origin, pdus)
		}
		results := make(map[string]pduResult, len(verdicts))
		for id, err := range verdicts {
			var internal interface{ Internal() bool }
			if errors.As(err, &internal) && internal.Internal() {
				// Our fault: fail the transaction so that the sender
				// retries it; what was accepted is kept and found again.
				return fmt.Errorf("transaction %s from %s: event %s: %w", txnID, in.Origin, id, err)
			}
			if err != nil {
				results[id] = pduResult{Error: err.Error()}
			} else {
				results[id] = pduResult{}
			}
		}
		log := zerolog.Ctx(ctx)
		for _, edu := range body.EDUs {
			if err := h.ReceiveEDU(ctx, in.Origin, edu.Type, edu.Content); err != nil {
				log.Info().Err(err).Str(fieldOrigin, in.Origin).Str("edu_type", edu.Type).Msg("EDU ignored")
			}
		}
		if err := ctx.Err(); err != nil {
			// The request ended while processing: what was committed stays,
			// but no answer is stored, so the retry processes the rest.
			return fmt.Errorf("transaction %s from %s: %w", txnID, in.Origin, err)
		}
		resp, err := json.Marshal(map[string]any{"pdus": results})
		if err != nil {
			return fmt.Errorf("transaction %s: encode answer: %w", txnID, err)
		}
		if err := h.StoreTransactionResponse(ctx, in.Origin, txnID, resp); err != nil {
			return fmt.Errorf("transaction %s from %s: %w", txnID, in.Origin, err)
		}
		writeRawJSON(w, http.StatusOK, resp)
		return nil
	}
}

// SendTransaction sends one transaction to destination (PUT /send) and
// returns the per-PDU errors of the answer: every event ID it lists, with
// "" for events the destination accepted.
func (c *Client) SendTransaction(ctx context.Context, destination, txnID string, pdus []json.RawMessage, edus []EDU) (map[string]string, error) {
	if pdus == nil {
		pdus = []json.RawMessage{}
	}
	now := time.Now
	if c.cfg.Now != nil {
		now = c.cfg.Now
	}
	body := map[string]any{
		"origin":           c.cfg.ServerName,
		"origin_server_ts": now().UnixMilli(),
		"pdus":             pdus,
	}
	if len(edus) > 0 {
		body["edus"] = edus
	}
	raw, err := c.Do(ctx, Request{
		Method: http.MethodPut, Destination: destination,
		Path: "/_matrix/federation/v1/send/" + url.PathEscape(txnID), Body: body,
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
