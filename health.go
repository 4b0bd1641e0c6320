package ferry

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// readinessTimeout bounds the checks of one /readyz request: a probe that
// hangs is worse than one that fails.
const readinessTimeout = 2 * time.Second

// check is one readiness condition and its verdict.
type check struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// healthz answers whether the process serves HTTP at all: liveness.
func healthz(w http.ResponseWriter, _ *http.Request) {
	writeHealth(w, http.StatusOK, map[string]any{"status": "ok"})
}

// readyz answers whether the server can do its work: the database
// answers, the signing key is loaded, and both listeners are up.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readinessTimeout)
	defer cancel()
	checks := []check{
		s.checkThat("database", func() error { return s.db.Ping(ctx) }),
		{Name: "signing_key", OK: s.keys != nil && len(s.keys.Current) > 0},
		{Name: "federation_listener", OK: s.federation != nil && s.federation.ListenAddr() != nil},
		{Name: "host_listener", OK: s.hostAPI != nil && s.hostAPI.Addr() != nil},
	}
	status, verdict := http.StatusOK, "ready"
	for _, c := range checks {
		if !c.OK {
			status, verdict = http.StatusServiceUnavailable, "not ready"
		}
	}
	writeHealth(w, status, map[string]any{"status": verdict, "checks": checks})
}

func (s *Server) checkThat(name string, f func() error) check {
	if err := f(); err != nil {
		return check{Name: name, Error: err.Error()}
	}
	return check{Name: name, OK: true}
}

func writeHealth(w http.ResponseWriter, status int, body any) {
	data, _ := json.Marshal(body) // maps of strings, bools and checks always encode
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}
