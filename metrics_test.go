package ferry_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry"
	"github.com/ferry-matrix/ferry/config"
	"github.com/ferry-matrix/ferry/hostapi/client"
)

// scrape reads a site's /metrics (no token needed) into series name with
// labels → value.
func scrape(t *testing.T, s *site) map[string]float64 {
	t.Helper()
	resp, err := http.Get(s.srv.HostAPI().URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMetrics_AfterAScenario runs a room across two servers and checks
// that /metrics on both shows the work: transactions and PDUs received,
// events persisted by outcome and origin, transactions sent, key fetches,
// database and state resolution timings, rooms and joined servers.
func TestMetrics_AfterAScenario(t *testing.T) {
	a, b := startSite(t), startSite(t)
	ctx := context.Background()
	alice, bob := a.register("alice"), b.register("bob")
	created, err := a.api.CreateRoom(ctx, client.CreateRoomRequest{Creator: alice, Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := b.api.JoinRoom(ctx, room, client.JoinRequest{UserID: bob, Via: []string{a.name}}); err != nil {
		t.Fatal(err)
	}
	a.awaitMembership(room, bob, "join")
	a.say(room, alice, "one")
	b.awaitText(room, "one")
	b.say(room, bob, "two")
	a.awaitText(room, "two")
	// Concurrent state from both sides makes the servers resolve state.
	if _, err := a.api.SetState(ctx, room, "m.room.topic", "", client.StateRequest{Sender: alice, Content: map[string]any{"topic": "a"}}); err != nil {
		t.Fatal(err)
	}
	b.say(room, bob, "three")
	a.awaitText(room, "three")
	b.await("topic", func(item client.Item, ev streamEvent) bool { return ev.Type == "m.room.topic" })

	ma, mb := scrape(t, a), scrape(t, b)
	positive := func(m map[string]float64, who, series string) {
		t.Helper()
		if m[series] <= 0 {
			var near []string
			name, _, _ := strings.Cut(series, "{")
			for k := range m {
				if strings.HasPrefix(k, name) {
					near = append(near, k)
				}
			}
			t.Errorf("%s: %s = %v, want > 0 (series of that name: %v)", who, series, m[series], near)
		}
	}
	for _, m := range []struct {
		who string
		m   map[string]float64
	}{{"A", ma}, {"B", mb}} {
		positive(m.m, m.who, `ferry_inbound_transactions_total{result="processed"}`)
		positive(m.m, m.who, `ferry_inbound_pdus_total{result="accepted"}`)
		positive(m.m, m.who, `ferry_events_persisted_total{origin="local",outcome="accepted"}`)
		positive(m.m, m.who, `ferry_events_persisted_total{origin="remote",outcome="accepted"}`)
		positive(m.m, m.who, `ferry_key_fetches_total{result="ok",source="direct"}`)
		positive(m.m, m.who, `ferry_database_transaction_seconds_count{kind="write"}`)
		positive(m.m, m.who, `ferry_database_transaction_seconds_count{kind="read"}`)
		positive(m.m, m.who, `ferry_rooms`)
		positive(m.m, m.who, `ferry_host_log_position`)
		positive(m.m, m.who, `ferry_outbound_destinations{state="ok"}`)
		positive(m.m, m.who, `go_goroutines`)
		if got := m.m[`ferry_joined_servers`]; got != 2 {
			t.Errorf("%s: ferry_joined_servers = %v, want 2", m.who, got)
		}
	}
	// Requests by route template: A served B's make_join and send_join,
	// both served each other's transactions; the host API served the
	// joins and sends.
	positive(ma, "A", `ferry_federation_requests_total{method="GET",route="/_matrix/federation/v1/make_join/{roomId}/{userId}",status="200"}`)
	for _, m := range []struct {
		who string
		m   map[string]float64
	}{{"A", ma}, {"B", mb}} {
		positive(m.m, m.who, `ferry_federation_requests_total{method="PUT",route="/_matrix/federation/v1/send/{txnId}",status="200"}`)
		positive(m.m, m.who, `ferry_federation_request_seconds_count{method="PUT",route="/_matrix/federation/v1/send/{txnId}"}`)
		positive(m.m, m.who, `ferry_federation_requests_total{method="GET",route="/_matrix/key/v2/server",status="200"}`)
		positive(m.m, m.who, `ferry_host_requests_total{method="POST",route="/_ferry/v1/rooms/{roomId}/send",status="200"}`)
		positive(m.m, m.who, `ferry_host_requests_total{method="PUT",route="/_ferry/v1/users/{userId}",status="200"}`)
	}
	positive(mb, "B", `ferry_host_requests_total{method="POST",route="/_ferry/v1/rooms/{roomIdOrAlias}/join",status="200"}`)
	positive(ma, "A", `ferry_outbound_transactions_total{destination="`+b.name+`"}`)
	positive(ma, "A", `ferry_outbound_transaction_attempts_total{result="ok"}`)
	positive(mb, "B", `ferry_outbound_transaction_attempts_total{result="ok"}`)
	positive(mb, "B", `ferry_outbound_transactions_total{destination="`+a.name+`"}`)
	if ma[`ferry_state_resolution_seconds_count`]+mb[`ferry_state_resolution_seconds_count`] <= 0 {
		t.Errorf("no state resolution counted on either server")
	}
}

// TestMetrics_SeparateListener starts a server with metrics.listen set and
// scrapes /metrics there: the listener serves the same registry and
// nothing else, and /metrics stays on the host listener too.
func TestMetrics_SeparateListener(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Federation.Listen = "127.0.0.1:0"
	cfg.Host.Listen = "127.0.0.1:0"
	cfg.Host.Token = "token"
	cfg.Metrics.Listen = "127.0.0.1:0"
	srv, err := ferry.Start(cfg, ferry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if srv.MetricsListener() == nil {
		t.Fatal("metrics.listen is set but the server has no metrics listener")
	}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
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
	base := "http://" + srv.MetricsListener().Addr().String()
	status, body := get(base + "/metrics")
	if status != http.StatusOK || !strings.Contains(body, "\nferry_rooms 0\n") || !strings.Contains(body, "ferry_database_transaction_seconds_count{kind=\"write\"}") {
		t.Errorf("metrics listener /metrics: %d\n%.2000s", status, body)
	}
	if status, _ := get(base + "/healthz"); status != http.StatusNotFound {
		t.Errorf("metrics listener /healthz: %d, want 404 (it serves /metrics only)", status)
	}
	if status, _ := get(srv.HostAPI().URL() + "/metrics"); status != http.StatusOK {
		t.Errorf("host listener /metrics: %d, want 200", status)
	}
}
