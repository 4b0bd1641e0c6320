package federation

import (
	"net/http"

	"github.com/gorilla/mux"
)

// recordRoute notes the template of the route that matched (never the
// path, which holds room and event IDs) for Server.ObserveRequest: a
// bounded label for metrics.
func recordRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if route := mux.CurrentRoute(r); route != nil {
			if tmpl, err := route.GetPathTemplate(); err == nil {
				if info, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
					info.route = tmpl
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}
