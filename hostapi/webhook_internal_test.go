package hostapi

import (
	"testing"
	"time"
)

// The wait after the n-th failure doubles from the minimum up to the
// maximum, each wait drawn from the upper half of its step.
func TestWebhookBackoff(t *testing.T) {
	d := &webhookDeliverer{minBackoff: time.Second, maxBackoff: 5 * time.Minute}
	step := time.Second
	for n := 1; n <= 30; n++ {
		for range 20 {
			got := d.backoff(n)
			if got < step/2 || got > step {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, got, step/2, step)
			}
		}
		step = min(step*2, d.maxBackoff)
	}
}
