package config

import (
	"strings"
	"testing"
)

func TestMetricsListen(t *testing.T) {
	cfg, err := Load("", envMap(map[string]string{"FERRY_METRICS_LISTEN": "127.0.0.1:9109"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics.Listen != "127.0.0.1:9109" {
		t.Errorf("metrics.listen = %q, want 127.0.0.1:9109", cfg.Metrics.Listen)
	}
	if Default().Metrics.Listen != "" {
		t.Errorf("metrics.listen defaults to %q, want empty (host listener only)", Default().Metrics.Listen)
	}
	// Port 0 lets each listener pick a free port: the same text is no
	// clash.
	if _, err := Load("", envMap(map[string]string{"FERRY_METRICS_LISTEN": "127.0.0.1:0", "FERRY_HOST_LISTEN": "127.0.0.1:0"})); err != nil {
		t.Errorf("metrics.listen and host.listen both 127.0.0.1:0: %v", err)
	}
	for value, want := range map[string]string{
		"not-an-address":        "metrics.listen",
		DefaultHostListen:       "must differ from federation.listen and host.listen",
		DefaultFederationListen: "must differ from federation.listen and host.listen",
	} {
		_, err := Load("", envMap(map[string]string{"FERRY_METRICS_LISTEN": value}))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("metrics.listen %q: error %v, want one mentioning %q", value, err, want)
		}
	}
}
