package federation

import (
	"context"
	"net/http"
	"net/url"

	"github.com/gorilla/mux"
)

// routes registers every endpoint the server answers. Paths not listed
// here get 404 M_UNRECOGNIZED, listed paths asked with another method 405
// M_UNRECOGNIZED.
func (s *Server) routes(r *mux.Router) {
	r.Handle("/_matrix/key/v2/server", s.handle(s.handleServerKeys)).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/version", s.handle(s.handleVersion)).Methods(http.MethodGet)
	if s.WellKnownServer != "" {
		r.Handle("/.well-known/matrix/server", s.handle(s.handleWellKnown)).Methods(http.MethodGet)
	}
	r.Handle("/healthz", s.handle(s.handleHealth)).Methods(http.MethodGet)

	// Notary (no authentication).
	r.Handle("/_matrix/key/v2/query/{serverName}", s.handle(s.handleKeyQueryGet)).Methods(http.MethodGet)
	r.Handle("/_matrix/key/v2/query", s.handle(s.handleKeyQueryPost)).Methods(http.MethodPost)

	// Authenticated with X-Matrix.
	r.Handle("/_matrix/federation/v1/query/profile", s.handle(s.authed(s.handleQueryProfile))).Methods(http.MethodGet)
	r.Handle("/_matrix/federation/v1/query/directory", s.handle(s.authed(s.handleQueryDirectory))).Methods(http.MethodGet)
	if s.Rooms != nil {
		s.roomRoutes(r, s.Rooms)
	}
	s.membershipRoutes(r)
}

// handlerFunc is the shape of every endpoint: it writes a response and
// returns nil, or returns an error for writeError to render.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type pathVarsKey struct{}

// handle adapts a handlerFunc: it percent-decodes the route's path
// variables once (the router matches on the encoded path, see Handler),
// then runs h and renders its error.
func (s *Server) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw := mux.Vars(r)
		if len(raw) > 0 {
			vars := make(map[string]string, len(raw))
			for name, v := range raw {
				decoded, err := url.PathUnescape(v)
				if err != nil {
					writeError(w, r, Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "path parameter %s is not valid percent-encoding", name))
					return
				}
				vars[name] = decoded
			}
			r = r.WithContext(context.WithValue(r.Context(), pathVarsKey{}, vars))
		}
		if err := h(w, r); err != nil {
			writeError(w, r, err)
		}
	})
}

// pathVar returns the decoded path variable name of the matched route.
func pathVar(r *http.Request, name string) string {
	vars, _ := r.Context().Value(pathVarsKey{}).(map[string]string)
	return vars[name]
}

func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{
		"server": map[string]string{"name": "Ferry", "version": s.Version},
	})
	return nil
}

func (s *Server) handleWellKnown(w http.ResponseWriter, r *http.Request) error {
	// Remote servers cache delegation for up to 48 hours; a day keeps a
	// change of target reasonably quick to take effect.
	w.Header().Set("Cache-Control", "max-age=86400")
	writeJSON(w, http.StatusOK, map[string]string{"m.server": s.WellKnownServer})
	return nil
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}
