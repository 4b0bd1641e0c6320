package metrics

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestMetrics_Requests(t *testing.T) {
	m := New()
	m.FederationRequest("/_matrix/federation/v1/send/{txnId}", http.MethodPut, 200, 2*time.Millisecond)
	m.FederationRequest("(unrouted)", "BREW", 404, time.Millisecond) // a client's method: bounded
	m.HostRequest("/healthz", http.MethodGet, 200, time.Millisecond)
	text := scrapeText(t, m)
	for _, want := range []string{
		`ferry_federation_requests_total{method="PUT",route="/_matrix/federation/v1/send/{txnId}",status="200"} 1`,
		`ferry_federation_requests_total{method="other",route="(unrouted)",status="404"} 1`,
		`ferry_federation_request_seconds_count{method="PUT",route="/_matrix/federation/v1/send/{txnId}"} 1`,
		`ferry_host_requests_total{method="GET",route="/healthz",status="200"} 1`,
		`ferry_host_request_seconds_count{method="GET",route="/healthz"} 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if strings.Contains(text, "BREW") {
		t.Error("an unknown method became a label value")
	}
}

func TestListener_ServesMetricsOnly(t *testing.T) {
	m := New()
	m.InboundTransaction(false)
	l, err := m.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + l.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	status, body := get("/metrics")
	if status != http.StatusOK || !strings.Contains(body, `ferry_inbound_transactions_total{result="processed"} 1`) {
		t.Errorf("/metrics: %d, body lacks the counter:\n%.500s", status, body)
	}
	if status, _ := get("/_ferry/v1/rooms"); status != http.StatusNotFound {
		t.Errorf("another path answered %d, want 404", status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(base + "/metrics"); err == nil {
		t.Error("the listener still answers after Close")
	}
}
