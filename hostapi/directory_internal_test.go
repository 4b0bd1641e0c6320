package hostapi

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
)

// The destinations route needs a running delivery to report anything
// but an empty list (tests with other servers show it live); its wire
// form is checked here.
func TestWireDestination(t *testing.T) {
	at := time.UnixMilli(1763800000123)
	cases := []struct {
		name string
		in   homeserver.DestinationHealth
		want string
	}{
		{"never contacted", homeserver.DestinationHealth{Name: "a.test", Queued: 3},
			`{"server_name":"a.test","failures":0,"queued":3,"active":false,"txns_sent":0,"pdu_errors":0,"catch_ups":0,"dropped":0}`},
		{"backing off", homeserver.DestinationHealth{
			Name: "b.test", LastSuccess: at, LastFailure: at.Add(time.Second), LastError: "connection refused",
			Failures: 2, BackoffUntil: at.Add(time.Minute), Queued: 7, InFlightTxn: "t1", Active: true,
			TxnsSent: 10, PDUErrors: 1, CatchUps: 1, Dropped: 4,
		}, `{"server_name":"b.test","last_success_ts":1763800000123,"last_failure_ts":1763800001123,"last_error":"connection refused","failures":2,"backoff_until_ts":1763800060123,"queued":7,"in_flight_txn":"t1","active":true,"txns_sent":10,"pdu_errors":1,"catch_ups":1,"dropped":4}`},
	}
	for _, c := range cases {
		got, err := json.Marshal(wireDestination(c.in))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
}
