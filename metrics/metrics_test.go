package metrics

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

// fixedHealth is a delivery state as Delivery.Health reports it.
type fixedHealth []homeserver.DestinationHealth

func (f fixedHealth) Health(context.Context) ([]homeserver.DestinationHealth, error) { return f, nil }

func scrapeText(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}

func TestMetrics_HooksAndScrape(t *testing.T) {
	m := New()
	db := storetest.Open(t, store.Options{ObserveTransaction: m.DatabaseTransaction})
	now := time.Unix(1_800_000_000, 0)
	m.WatchSources(Sources{
		Store: db,
		Delivery: fixedHealth{
			{Name: "up.example", TxnsSent: 7, Queued: 2, Active: true},
			{Name: "down.example", Failures: 3, BackoffUntil: now.Add(90 * time.Second), Queued: 40, CatchUps: 1, Dropped: 12},
			{Name: "flaky.example", Failures: 1},
		},
		Now: func() time.Time { return now },
	})
	m.InboundTransaction(false)
	m.InboundTransaction(true)
	m.InboundPDUs(map[string]error{"$a": nil, "$b": nil, "$c": errors.New("bad")})
	m.InboundEDU("m.typing", nil)
	m.InboundEDU("org.example.custom", nil) // a remote server's choice: not a new series
	m.InboundEDU("m.receipt", errors.New("not in the room"))
	m.Persisted(store.SoftFailed, false)
	m.StateResolved(3 * time.Millisecond)
	m.OutboundAttempt(false, 0)
	m.OutboundAttempt(true, 2)
	m.OutboundAttempt(true, 0)

	text := scrapeText(t, m)
	for _, want := range []string{
		`ferry_inbound_transactions_total{result="deduplicated"} 1`,
		`ferry_inbound_transactions_total{result="processed"} 1`,
		`ferry_inbound_pdus_total{result="accepted"} 2`,
		`ferry_inbound_pdus_total{result="refused"} 1`,
		`ferry_inbound_edus_total{result="accepted",type="other"} 1`,
		`ferry_inbound_edus_total{result="ignored",type="m.receipt"} 1`,
		`ferry_events_persisted_total{origin="remote",outcome="soft_failed"} 1`,
		`ferry_state_resolution_seconds_count 1`,
		`ferry_rooms 0`,
		`ferry_outbound_transactions_total{destination="up.example"} 7`,
		`ferry_outbound_queued{destination="down.example"} 40`,
		`ferry_outbound_backoff_seconds{destination="down.example"} 90`,
		`ferry_outbound_destinations{state="backing_off"} 1`,
		`ferry_outbound_destinations{state="failing"} 1`,
		`ferry_outbound_destinations{state="ok"} 1`,
		`ferry_outbound_catch_ups_total{destination="down.example"} 1`,
		`ferry_outbound_dropped_total{destination="down.example"} 12`,
		`ferry_outbound_senders 1`,
		`ferry_outbound_transaction_attempts_total{result="failed"} 1`,
		`ferry_outbound_transaction_attempts_total{result="ok"} 2`,
		`ferry_outbound_refused_pdus_total 2`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
	// The first scrape read the database: the next one shows that read
	// timed.
	if !strings.Contains(scrapeText(t, m), `ferry_database_transaction_seconds_count{kind="read"}`) {
		t.Error("database transactions are not timed")
	}
	if strings.Contains(text, "org.example.custom") {
		t.Error("an unknown EDU type became a label value")
	}
}
