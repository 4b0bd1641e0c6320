package ferry_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ferry-matrix/ferry"
	"github.com/ferry-matrix/ferry/config"
	"github.com/ferry-matrix/ferry/homeserver"
)

// ExampleStart runs Ferry inside a program and acts as a local user
// without HTTP: the same operations the host API serves.
func ExampleStart() {
	cfg := config.Default()
	cfg.ServerName = "chat.example.org"
	cfg.DataDir = "/var/lib/example-product/ferry"
	srv, err := ferry.Start(cfg, ferry.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Close(ctx)
	}()

	ctx := context.Background()
	host := srv.Host()
	if _, err := host.PutUser(ctx, homeserver.User{UserID: "@alice:chat.example.org", DisplayName: "Alice"}); err != nil {
		log.Fatal(err)
	}
	roomID, err := host.CreateRoom(ctx, homeserver.CreateRoomRequest{
		Creator: "@alice:chat.example.org", Preset: homeserver.PresetPrivateChat, Name: "Team",
		Invite: []string{"@bob:matrix.example.net"},
	})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := host.Send(ctx, roomID, "@alice:chat.example.org", "m.room.message",
		map[string]any{"msgtype": "m.text", "body": "hello"}, "txn-1"); err != nil {
		log.Fatal(err)
	}

	// Everything that arrives, from federation or from the host, is in
	// the durable event stream.
	var since int64
	for {
		if err := host.WaitEvents(ctx, since); err != nil {
			log.Fatal(err)
		}
		items, err := host.Events(ctx, since, 100)
		if err != nil {
			log.Fatal(err)
		}
		for _, item := range items {
			fmt.Println(item.Kind, item.RoomID)
			since = item.Pos
		}
	}
}
