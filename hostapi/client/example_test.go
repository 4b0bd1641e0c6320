package client_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/ferry-matrix/ferry/hostapi/client"
)

// A host product registers a user, opens a room, says hello and then
// follows everything that arrives, resuming where it stopped.
func Example() {
	ctx := context.Background()
	c, err := client.New("127.0.0.1:8009", os.Getenv("FERRY_HOST_TOKEN"))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.PutUser(ctx, "@alice:example.org", client.UserProfile{DisplayName: "Alice"}); err != nil {
		log.Fatal(err)
	}
	room, err := c.CreateRoom(ctx, client.CreateRoomRequest{Creator: "@alice:example.org", Name: "Lobby", Preset: client.PresetPublicChat})
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Send(ctx, room.RoomID, client.SendRequest{
		Sender:  "@alice:example.org",
		Type:    "m.room.message",
		Content: map[string]any{"msgtype": "m.text", "body": "hello"},
		TxnID:   "hello-1", // a retry with the same ID sends nothing twice
	})
	if client.IsUnreachable(err) {
		log.Fatal("is ferry serve running? ", err)
	} else if err != nil {
		log.Fatal(err)
	}
	since := "0" // keep the last Pos handled to resume after a restart
	err = c.Follow(ctx, since, func(it client.Item) error {
		fmt.Println(it.Pos, it.Kind, it.RoomID)
		return nil
	})
	log.Fatal(err)
}
