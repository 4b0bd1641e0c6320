package store_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ferry-matrix/ferry/store"
	"github.com/ferry-matrix/ferry/store/storetest"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "sqlite:///var/lib/ferry/ferry.db", want: "/var/lib/ferry/ferry.db"},
		{in: "sqlite://data/ferry.db", want: "data/ferry.db"},
		{in: "/tmp/x.db", want: "/tmp/x.db"},
		{in: "sqlite://", bad: true},
		{in: "postgres://host/db", bad: true},
		{in: "", bad: true},
	} {
		got, err := store.ParseURL(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseURL(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestOpen_MigratesReopensAndRefusesNewer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ferry.db")
	db, err := store.Open(ctx, "sqlite://"+path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PutUser(ctx, store.User{ID: "@bob:a.test", DisplayName: "Bob"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = store.Open(ctx, path, store.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	u, err := db.User(ctx, "@bob:a.test")
	if err != nil || u.DisplayName != "Bob" {
		t.Fatalf("after reopen: %+v, %v", u, err)
	}
	if err := db.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
	db.Close()

	raw, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := raw.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != store.SchemaVersion() {
		t.Fatalf("user_version = %d, %v; want %d", v, err, store.SchemaVersion())
	}
	if _, err := raw.Exec("PRAGMA user_version = 999"); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	_, err = store.Open(ctx, path, store.Options{})
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("open of a newer schema: %v, want ErrSchemaTooNew", err)
	}
}

func TestOpen_WALAndReadOnlyReaders(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t)
	raw, err := sql.Open("sqlite", "file:"+db.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var mode string
	if err := raw.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
}

func TestUsersAndAliases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	if _, err := db.User(ctx, "@x:a.test"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing user: %v", err)
	}
	for _, u := range []store.User{{ID: "@b:a.test"}, {ID: "@a:a.test", DisplayName: "A"}, {ID: "@a:a.test", DisplayName: "A2", AvatarURL: "mxc://a.test/x"}} {
		if err := db.PutUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	us, err := db.Users(ctx)
	if err != nil || len(us) != 2 || us[0].ID != "@a:a.test" || us[0].DisplayName != "A2" || us[0].AvatarURL != "mxc://a.test/x" || us[0].CreatedTS == 0 {
		t.Fatalf("users = %+v, %v", us, err)
	}

	a := store.Alias{Alias: "#r:a.test", RoomID: "!r:a.test", Servers: []string{"a.test", "b.test"}, Creator: "@a:a.test"}
	if err := db.PutAlias(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := db.PutAlias(ctx, a); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second PutAlias: %v, want ErrConflict", err)
	}
	got, err := db.Alias(ctx, "#r:a.test")
	if err != nil || got.RoomID != a.RoomID || len(got.Servers) != 2 || got.Servers[1] != "b.test" || got.Creator != a.Creator {
		t.Fatalf("alias = %+v, %v", got, err)
	}
	names, err := db.RoomAliases(ctx, "!r:a.test")
	if err != nil || len(names) != 1 || names[0] != "#r:a.test" {
		t.Fatalf("room aliases = %v, %v", names, err)
	}
	if err := db.DeleteAlias(ctx, "#r:a.test"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteAlias(ctx, "#r:a.test"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := db.Alias(ctx, "#r:a.test"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted alias: %v", err)
	}
}

func TestRooms(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t)
	if err := db.PutRoom(ctx, store.Room{ID: "!b:a.test", Version: "12", Status: store.RoomInvited}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutRoom(ctx, store.Room{ID: "!b:a.test", Version: "12", Status: store.RoomJoined}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutRoom(ctx, store.Room{ID: "!b:a.test", Version: "10"}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("version change: %v, want ErrConflict", err)
	}
	if err := db.PutRoom(ctx, store.Room{ID: "!c:a.test", Version: "3"}); err == nil {
		t.Fatal("unsupported version accepted")
	}
	if err := db.PutRoom(ctx, store.Room{ID: "!a:a.test", Version: "10", Status: store.RoomCreated}); err != nil {
		t.Fatal(err)
	}
	r, err := db.Room(ctx, "!b:a.test")
	if err != nil || r.Version != "12" || r.Status != store.RoomJoined || r.CreatedTS == 0 {
		t.Fatalf("room = %+v, %v", r, err)
	}
	rs, err := db.Rooms(ctx)
	if err != nil || len(rs) != 2 || rs[0].ID != "!a:a.test" {
		t.Fatalf("rooms = %+v, %v", rs, err)
	}
	if _, err := db.Room(ctx, "!z:a.test"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing room: %v", err)
	}
}
