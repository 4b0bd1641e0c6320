// Package store persists everything Ferry must not lose: events and the
// edges between them, state snapshots, forward extremities and current
// state, rooms, local users and aliases, remote server keys, inbound
// transaction de-duplication, outbound per-destination queues and the host
// event log with its cursors.
//
// # Backend
//
// The one backend today is SQLite through modernc.org/sqlite (pure Go, so
// the binary stays static). [Open] takes a path or a "sqlite://" URL
// (see [ParseURL]), applies the embedded migrations (migrations/*.sql) and
// refuses a database written by a newer Ferry. The database runs in WAL
// mode with one writer connection and a pool of read-only readers; every
// write method is one transaction on the writer. All SQL text lives in
// sqlite_dialect.go behind the dialect struct, so a PostgreSQL backend is a
// second dialect value and a DSN, not a change to callers.
//
// # Durability
//
// Synchronous defaults to FULL: a commit is on disk before the method
// returns, so an answered /send survives kill -9 and power loss. NORMAL
// (Options.Synchronous) survives process crashes only.
//
// # Storage model
//
// Events, rooms, (type, state_key) pairs and snapshots have integer IDs.
// State is stored as snapshots that share structure: a full snapshot lists
// the whole state; any other snapshot is a parent plus a delta. When a
// snapshot is added, it swallows the tail of its parent chain whose spans
// equal its own (a binary counter), so the chain from any snapshot to its
// full root has at most log2(n)+1 nodes after n changes, and each change is
// rewritten at most log2(n) times. A new full snapshot is written when the
// chain's entries exceed FullSnapshotRatio of the root's, so reading the
// state at any event reads the root once plus a bounded delta. Each event
// row points at the snapshot of the state before it; the room row points
// at the current state, which is also materialised in current_state.
//
// # Concurrency
//
// A *DB is safe for concurrent use. Callers serialise writes to one room
// (the engine holds a per-room lock); the store itself serialises all
// writes on its single writer connection.
package store
