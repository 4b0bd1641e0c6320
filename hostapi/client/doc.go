// Package client is the typed Go client of Ferry's host API
// (/_ferry/v1/...), the private HTTP plane through which the host product
// acts as its local users and reads the event stream. The ferry CLI is
// built on it; host products written in Go may use it too.
//
// # Usage
//
//	c, err := client.New("127.0.0.1:8009", token) // or "unix:/run/ferry/host.sock"
//	if err != nil { ... }
//	room, err := c.CreateRoom(ctx, client.CreateRoomRequest{Creator: "@alice:example.org"})
//	id, err := c.Send(ctx, room.RoomID, client.SendRequest{
//		Sender:  "@alice:example.org",
//		Type:    "m.room.message",
//		Content: map[string]any{"msgtype": "m.text", "body": "hello"},
//		TxnID:   "order-42",
//	})
//	err = c.Follow(ctx, "0", func(it client.Item) error { ...; return nil })
//
// # Errors
//
// A refusal of the server is an [*Error] carrying the HTTP status and the
// Matrix errcode and message. A request that never reached the server
// (nothing listens at the address, the unix socket does not exist) is an
// [*UnreachableError]; use [IsUnreachable] to tell it apart. Other failures
// are wrapped with the method and path of the request.
//
// A Client is safe for concurrent use by multiple goroutines. It depends on
// the standard library only, and defines its own wire types so that a host
// product need not import the server's packages.
package client
