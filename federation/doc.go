// Package federation is Ferry's public plane: the Matrix server-server API.
//
// [Server] is the inbound side: one gorilla/mux router (every route in
// routes.go), handlers that return errors, and one function (errors.go)
// that turns any error into a Matrix error body {"errcode", "error"} with
// its HTTP status. It serves HTTPS on the federation listener with a
// configured certificate or a self-signed one generated for local trials
// ([LoadOrCreateSelfSigned]), or plain HTTP behind a reverse proxy.
//
// Every request is logged once, when it completes, with its method, path,
// status, duration and (for authenticated requests) origin server.
//
// The package depends on rooms and keys only. What it needs from the rest
// of the server it defines as small interfaces, which package homeserver
// satisfies, so cmd/ferry can build both without either importing the
// other.
package federation
