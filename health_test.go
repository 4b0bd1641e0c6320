package ferry_test

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestHealthEndpoints: /healthz and /readyz answer on the host listener
// without a token, and /readyz lists its checks.
func TestHealthEndpoints(t *testing.T) {
	s := startSite(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(s.srv.HostAPI().URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Status string `json:"status"`
			Checks []struct {
				Name string `json:"name"`
				OK   bool   `json:"ok"`
			} `json:"checks"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %+v %v", path, resp.StatusCode, body, err)
		}
		if path == "/readyz" {
			if body.Status != "ready" || len(body.Checks) != 4 {
				t.Fatalf("/readyz: %+v", body)
			}
			for _, c := range body.Checks {
				if !c.OK {
					t.Errorf("check %s failed", c.Name)
				}
			}
		}
	}
	// Everything else on the host listener needs the token.
	resp, err := http.Get(s.srv.HostAPI().URL() + "/_ferry/v1/rooms")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("rooms without a token: %d", resp.StatusCode)
	}
}
