package hostapi

import (
	"net/http"

	"github.com/gorilla/mux"
)

// Prefix is the path every host API route starts with.
const Prefix = "/_ferry/v1"

// routes registers every route. Paths not listed get 404 M_UNRECOGNIZED,
// listed paths asked with another method 405 M_UNRECOGNIZED.
func (s *Server) routes(r *mux.Router) {
	// Full paths on the root router rather than a subrouter: mux answers
	// a method mismatch with the root's MethodNotAllowedHandler only.
	route := func(method, path string, h handlerFunc) {
		r.Handle(Prefix+path, s.handle(h)).Methods(method)
	}

	route(http.MethodGet, "/users", s.handleUsers)
	route(http.MethodPut, "/users/{userId}", s.handlePutUser)
	route(http.MethodGet, "/users/{userId}", s.handleGetUser)
	route(http.MethodDelete, "/users/{userId}", s.handleDeleteUser)

	route(http.MethodPost, "/rooms", s.handleCreateRoom)
	route(http.MethodGet, "/rooms", s.handleRooms)
	route(http.MethodGet, "/rooms/{roomId}", s.handleRoom)
	route(http.MethodPost, "/rooms/{roomIdOrAlias}/join", s.handleJoin)
	route(http.MethodPost, "/rooms/{roomIdOrAlias}/knock", s.handleKnock)
	route(http.MethodPost, "/rooms/{roomId}/invite", s.handleInvite)
	route(http.MethodPost, "/rooms/{roomId}/leave", s.handleLeave)
	route(http.MethodPost, "/rooms/{roomId}/kick", s.handleModeration(s.host.Kick))
	route(http.MethodPost, "/rooms/{roomId}/ban", s.handleModeration(s.host.Ban))
	route(http.MethodPost, "/rooms/{roomId}/unban", s.handleModeration(s.host.Unban))
	route(http.MethodPost, "/rooms/{roomId}/send", s.handleSend)
	route(http.MethodGet, "/rooms/{roomId}/state", s.handleState)
	route(http.MethodPut, "/rooms/{roomId}/state/{eventType}", s.handleSetState)
	route(http.MethodPut, "/rooms/{roomId}/state/{eventType}/", s.handleSetState)
	route(http.MethodPut, "/rooms/{roomId}/state/{eventType}/{stateKey}", s.handleSetState)
	route(http.MethodPost, "/rooms/{roomId}/redact/{eventId}", s.handleRedact)
	route(http.MethodPost, "/rooms/{roomId}/typing", s.handleTyping)
	route(http.MethodPost, "/rooms/{roomId}/receipt", s.handleReceipt)
	route(http.MethodGet, "/rooms/{roomId}/messages", s.handleMessages)

	route(http.MethodPut, "/aliases/{roomAlias}", s.handlePutAlias)
	route(http.MethodGet, "/aliases/{roomAlias}", s.handleGetAlias)
	route(http.MethodDelete, "/aliases/{roomAlias}", s.handleDeleteAlias)

	route(http.MethodGet, "/destinations", s.handleDestinations)
	route(http.MethodGet, "/events", s.handleEvents)
}
