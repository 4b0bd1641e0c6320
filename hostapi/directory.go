package hostapi

import (
	"net/http"
	"time"

	"github.com/ferry-matrix/ferry/homeserver"
)

type putAliasRequest struct {
	RoomID *string `json:"room_id"`
}

func (s *Server) handlePutAlias(w http.ResponseWriter, r *http.Request) error {
	alias := pathVar(r, "roomAlias")
	if err := s.localAlias("roomAlias", alias); err != nil {
		return err
	}
	var req putAliasRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	room, err := required("room_id", req.RoomID)
	if err != nil {
		return err
	}
	if err := roomID("room_id", room); err != nil {
		return err
	}
	if err := s.host.PutAlias(r.Context(), alias, room); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

func (s *Server) handleGetAlias(w http.ResponseWriter, r *http.Request) error {
	alias := pathVar(r, "roomAlias")
	if err := roomAlias("roomAlias", alias); err != nil {
		return err
	}
	room, servers, err := s.host.Alias(r.Context(), alias)
	if err != nil {
		return err
	}
	if servers == nil {
		servers = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"room_id": room, "servers": servers})
	return nil
}

func (s *Server) handleDeleteAlias(w http.ResponseWriter, r *http.Request) error {
	alias := pathVar(r, "roomAlias")
	if err := s.localAlias("roomAlias", alias); err != nil {
		return err
	}
	if err := s.host.DeleteAlias(r.Context(), alias); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

// destination is the wire form of homeserver.DestinationHealth:
// timestamps in ms since the epoch, omitted when zero.
type destination struct {
	ServerName     string `json:"server_name"`
	LastSuccessTS  int64  `json:"last_success_ts,omitempty"`
	LastFailureTS  int64  `json:"last_failure_ts,omitempty"`
	LastError      string `json:"last_error,omitempty"`
	Failures       int    `json:"failures"`
	BackoffUntilTS int64  `json:"backoff_until_ts,omitempty"`
	Queued         int    `json:"queued"`
	InFlightTxn    string `json:"in_flight_txn,omitempty"`
	Active         bool   `json:"active"`
	TxnsSent       int64  `json:"txns_sent"`
	PDUErrors      int64  `json:"pdu_errors"`
	CatchUps       int64  `json:"catch_ups"`
	Dropped        int64  `json:"dropped"`
}

// unixMS is t in ms since the epoch, 0 for the zero time.
func unixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// wireDestination converts one destination's health to its wire form.
func wireDestination(h homeserver.DestinationHealth) destination {
	return destination{
		ServerName:     h.Name,
		LastSuccessTS:  unixMS(h.LastSuccess),
		LastFailureTS:  unixMS(h.LastFailure),
		LastError:      h.LastError,
		Failures:       h.Failures,
		BackoffUntilTS: unixMS(h.BackoffUntil),
		Queued:         h.Queued,
		InFlightTxn:    h.InFlightTxn,
		Active:         h.Active,
		TxnsSent:       h.TxnsSent,
		PDUErrors:      h.PDUErrors,
		CatchUps:       h.CatchUps,
		Dropped:        h.Dropped,
	}
}

func (s *Server) handleDestinations(w http.ResponseWriter, r *http.Request) error {
	health, err := s.host.Destinations(r.Context())
	if err != nil {
		return err
	}
	out := make([]destination, 0, len(health))
	for _, h := range health {
		out = append(out, wireDestination(h))
	}
	writeJSON(w, http.StatusOK, map[string]any{"destinations": out})
	return nil
}
