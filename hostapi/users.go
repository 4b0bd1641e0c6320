package hostapi

import (
	"net/http"

	"github.com/ferry-matrix/ferry/homeserver"
)

// putUserRequest is the body of PUT /users/{userId}.
type putUserRequest struct {
	DisplayName string `json:"displayname"`
	AvatarURL   string `json:"avatar_url"`
}

func (s *Server) handlePutUser(w http.ResponseWriter, r *http.Request) error {
	userID := pathVar(r, "userId")
	if err := s.localUser("userId", userID); err != nil {
		return err
	}
	var req putUserRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	u, err := s.host.PutUser(r.Context(), homeserver.User{UserID: userID, DisplayName: req.DisplayName, AvatarURL: req.AvatarURL})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (s *Server) handleGetUser(w http.ResponseWriter, r *http.Request) error {
	userID := pathVar(r, "userId")
	if err := s.localUser("userId", userID); err != nil {
		return err
	}
	u, err := s.host.User(r.Context(), userID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (s *Server) handleDeleteUser(w http.ResponseWriter, r *http.Request) error {
	userID := pathVar(r, "userId")
	if err := s.localUser("userId", userID); err != nil {
		return err
	}
	if err := s.host.DeleteUser(r.Context(), userID); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

func (s *Server) handleUsers(w http.ResponseWriter, r *http.Request) error {
	users, err := s.host.Users(r.Context())
	if err != nil {
		return err
	}
	if users == nil {
		users = []homeserver.User{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": users})
	return nil
}
