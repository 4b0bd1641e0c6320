package hostapi_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/homeserver"
	"github.com/ferry-matrix/ferry/hostapi"
	"github.com/ferry-matrix/ferry/rooms/roomstest"
	"github.com/ferry-matrix/ferry/store"
)

// Example wires the host API over a store and an engine, as ferry serve
// does (which also gives the engine a key ring and federation). The
// token comes from the data directory, created on first start.
func Example() {
	dataDir, err := os.MkdirTemp("", "ferry-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dataDir)
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(dataDir, "ferry.db"), store.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer db.Close()
	engine := &homeserver.Engine{ServerName: "hs.example", Signer: roomstest.Key("hs.example"), Store: db}
	token, created, err := hostapi.LoadOrCreateToken(dataDir)
	if err != nil {
		fmt.Println(err)
		return
	}
	srv, err := hostapi.New(hostapi.Config{
		Host:       &homeserver.Host{Engine: engine},
		Cursors:    db,
		Token:      token,
		ServerName: "hs.example",
		Logger:     zerolog.Nop(),
		Extra: map[string]http.Handler{
			"/healthz": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") }),
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := srv.Open("127.0.0.1:0"); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close(ctx)

	req, _ := http.NewRequest(http.MethodPut, srv.URL()+"/_ferry/v1/users/@alice:hs.example", strings.NewReader(`{"displayname": "Alice"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println("token created:", created)
	fmt.Println("PUT user:", resp.Status)
	// Output:
	// token created: true
	// PUT user: 200 OK
}
