package federation

import (
	"net"
	"net/http"
	"strconv"

	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
)

const (
	// maxNotaryServers bounds the servers one notary query may ask about,
	// so a single request cannot make us fetch from the whole federation.
	maxNotaryServers = 100
	// maxNotaryBody bounds the POST body of a notary query.
	maxNotaryBody = 256 << 10
)

// handleKeyQueryGet answers GET /_matrix/key/v2/query/{serverName}
// (no authentication): the server's keys from our cache or fetched, signed
// by us, honouring minimum_valid_until_ts.
func (s *Server) handleKeyQueryGet(w http.ResponseWriter, r *http.Request) error {
	server := pathVar(r, "serverName")
	if _, err := parseServerName(server); err != nil {
		return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "%v", err)
	}
	var minValid int64
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "minimum_valid_until_ts must be a non-negative integer")
		}
		minValid = n
	}
	return s.answerKeyQuery(w, r, []keys.KeyQuery{{ServerName: server, MinimumValidUntilTS: minValid}})
}

// handleKeyQueryPost answers POST /_matrix/key/v2/query (no
// authentication): {"server_keys": {server: {keyID: {"minimum_valid_until_ts": ms}}}}.
func (s *Server) handleKeyQueryPost(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxNotaryBody)
	_, content, _, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	obj, _ := content.(map[string]any)
	serverKeys, ok := obj["server_keys"].(map[string]any)
	if !ok {
		return Errorf(http.StatusBadRequest, "M_BAD_JSON", "server_keys must be an object of server names")
	}
	if len(serverKeys) > maxNotaryServers {
		return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "at most %d servers per query", maxNotaryServers)
	}
	queries := make([]keys.KeyQuery, 0, len(serverKeys))
	for server, v := range serverKeys {
		if _, err := parseServerName(server); err != nil {
			return Errorf(http.StatusBadRequest, "M_INVALID_PARAM", "%v", err)
		}
		ids, ok := v.(map[string]any)
		if !ok {
			return Errorf(http.StatusBadRequest, "M_BAD_JSON", "server_keys[%s] must be an object of key IDs", server)
		}
		q := keys.KeyQuery{ServerName: server}
		for keyID, c := range ids {
			criteria, ok := c.(map[string]any)
			if !ok {
				return Errorf(http.StatusBadRequest, "M_BAD_JSON", "server_keys[%s][%s] must be an object", server, keyID)
			}
			q.KeyIDs = append(q.KeyIDs, keyID)
			if raw, present := criteria["minimum_valid_until_ts"]; present {
				n, ok := raw.(int64)
				if !ok || n < 0 {
					return Errorf(http.StatusBadRequest, "M_BAD_JSON", "minimum_valid_until_ts for %s %s must be a non-negative integer", server, keyID)
				}
				q.MinimumValidUntilTS = max(q.MinimumValidUntilTS, n)
			}
		}
		queries = append(queries, q)
	}
	return s.answerKeyQuery(w, r, queries)
}

// answerKeyQuery leaves out servers our federation policy refuses, asks
// the key ring and writes {"server_keys": [...]}.
func (s *Server) answerKeyQuery(w http.ResponseWriter, r *http.Request, queries []keys.KeyQuery) error {
	if s.KeyRing == nil {
		return ErrUnrecognized
	}
	// The notary is unauthenticated and makes us fetch from other
	// servers, so each client address gets a few queries at a time.
	release, err := s.notaryLimiter().acquire(remoteHost(r))
	if err != nil {
		w.Header().Set("Retry-After", "1")
		return err
	}
	defer release()
	allowed := queries[:0]
	for _, q := range queries {
		if q.ServerName == s.ServerName || s.Policy.Allowed(q.ServerName) {
			allowed = append(allowed, q)
		}
	}
	docs, err := s.KeyRing.NotaryQuery(r.Context(), allowed)
	if err != nil {
		return err
	}
	list := make([]any, len(docs))
	for i, d := range docs {
		list[i] = d
	}
	body, err := rooms.EncodeCanonical(map[string]any{"server_keys": list})
	if err != nil {
		return err
	}
	writeRawJSON(w, http.StatusOK, body)
	return nil
}

// remoteHost is the client's IP address, the key of the notary limiter.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
