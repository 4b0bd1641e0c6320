// Package ferry runs Ferry, a federation-only Matrix homeserver, inside a
// Go program: it speaks the Matrix server-server API and nothing else of
// Matrix, for room versions 10 (the long-term-stable version, MIMI I.1)
// and 12.
//
// Start wires every component from a configuration (the same one `ferry
// serve` reads) and starts the federation listener and, when configured,
// the host API listener. The returned Server's Host method gives the
// operations a product performs as its local users — register users,
// create and join rooms, send events, read the event stream — in process,
// without HTTP; they are the operations the host API serves.
//
//	cfg := config.Default()
//	cfg.ServerName = "chat.example.org"
//	srv, err := ferry.Start(cfg, ferry.Options{})
//	...
//	roomID, err := srv.Host().CreateRoom(ctx, homeserver.CreateRoomRequest{Creator: "@alice:chat.example.org"})
//
// The binary is cmd/ferry. The protocol is in rooms and keys, the public
// plane in federation, the engine in homeserver, persistence in store and
// the host API in hostapi. The repository-wide tests here check the
// direction of imports between those packages (imports_test.go) and that
// every package is documented.
package ferry
