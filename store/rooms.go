package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// PutRoom records a room, or updates the status of one held. A room held
// under another version is ErrConflict.
func (db *DB) PutRoom(ctx context.Context, r Room) error {
	err := db.write(ctx, func(t *txn) error {
		_, err := db.ensureRoom(t, r.ID, r.Version, r.Status)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: put room: %w", err)
	}
	return nil
}

// Room returns a room; ErrNotFound if it is not held.
func (db *DB) Room(ctx context.Context, roomID string) (Room, error) {
	var r Room
	err := db.read(ctx, func(t *txn) error {
		err := t.queryRow(db.d.roomByID, roomID).Scan(&r.ID, &r.Version, &r.Status, &r.CreatedTS)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("room %s: %w", roomID, ErrNotFound)
		}
		return err
	})
	if err != nil {
		return Room{}, fmt.Errorf("store: %w", err)
	}
	return r, nil
}

// Rooms returns every room held, by room ID.
func (db *DB) Rooms(ctx context.Context) ([]Room, error) {
	var out []Room
	err := db.read(ctx, func(t *txn) error {
		rows, err := t.query(db.d.allRooms)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r Room
			if err := rows.Scan(&r.ID, &r.Version, &r.Status, &r.CreatedTS); err != nil {
				return err
			}
			out = append(out, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: rooms: %w", err)
	}
	return out, nil
}

// User is a local user.
type User struct {
	ID          string // "@localpart:our.server"
	DisplayName string
	AvatarURL   string
	CreatedTS   int64 // set by the store on first write
}

// PutUser creates a local user or updates its profile.
func (db *DB) PutUser(ctx context.Context, u User) error {
	err := db.write(ctx, func(t *txn) error {
		_, err := t.exec(db.d.putUser, u.ID, u.DisplayName, u.AvatarURL, db.now())
		return err
	})
	if err != nil {
		return fmt.Errorf("store: put user: %w", err)
	}
	return nil
}

// User returns a local user; ErrNotFound if there is none.
func (db *DB) User(ctx context.Context, userID string) (User, error) {
	var u User
	err := db.read(ctx, func(t *txn) error {
		err := t.queryRow(db.d.userByID, userID).Scan(&u.ID, &u.DisplayName, &u.AvatarURL, &u.CreatedTS)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("user %s: %w", userID, ErrNotFound)
		}
		return err
	})
	if err != nil {
		return User{}, fmt.Errorf("store: %w", err)
	}
	return u, nil
}

// Users returns every local user, by ID.
func (db *DB) Users(ctx context.Context) ([]User, error) {
	var out []User
	err := db.read(ctx, func(t *txn) error {
		rows, err := t.query(db.d.allUsers)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u User
			if err := rows.Scan(&u.ID, &u.DisplayName, &u.AvatarURL, &u.CreatedTS); err != nil {
				return err
			}
			out = append(out, u)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: users: %w", err)
	}
	return out, nil
}

// Alias is a room alias of ours.
type Alias struct {
	Alias     string // "#name:our.server"
	RoomID    string
	Servers   []string // servers to join through
	Creator   string   // user who made it
	CreatedTS int64    // set by the store
}

// PutAlias creates an alias. An alias that exists is ErrConflict (delete
// it first to move it).
func (db *DB) PutAlias(ctx context.Context, a Alias) error {
	servers, err := json.Marshal(a.Servers)
	if err != nil {
		return fmt.Errorf("store: put alias: %w", err)
	}
	err = db.write(ctx, func(t *txn) error {
		res, err := t.exec(db.d.insertAlias, a.Alias, a.RoomID, string(servers), a.Creator, db.now())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("alias %s: %w", a.Alias, ErrConflict)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: put alias: %w", err)
	}
	return nil
}

// Alias returns an alias; ErrNotFound if there is none.
func (db *DB) Alias(ctx context.Context, alias string) (Alias, error) {
	var a Alias
	err := db.read(ctx, func(t *txn) error {
		var servers string
		err := t.queryRow(db.d.aliasByName, alias).Scan(&a.Alias, &a.RoomID, &servers, &a.Creator, &a.CreatedTS)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("alias %s: %w", alias, ErrNotFound)
		}
		if err != nil {
			return err
		}
		return json.Unmarshal([]byte(servers), &a.Servers)
	})
	if err != nil {
		return Alias{}, fmt.Errorf("store: %w", err)
	}
	return a, nil
}

// DeleteAlias removes an alias; ErrNotFound if there is none.
func (db *DB) DeleteAlias(ctx context.Context, alias string) error {
	err := db.write(ctx, func(t *txn) error {
		res, err := t.exec(db.d.deleteAlias, alias)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("alias %s: %w", alias, ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: delete alias: %w", err)
	}
	return nil
}

// RoomAliases returns the aliases pointing at a room, sorted.
func (db *DB) RoomAliases(ctx context.Context, roomID string) ([]string, error) {
	var out []string
	err := db.read(ctx, func(t *txn) error {
		var err error
		out, err = t.queryStrings(db.d.aliasesOfRoom, roomID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: room aliases: %w", err)
	}
	return out, nil
}
