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
// A few writes are relaxed on purpose: bookkeeping whose loss costs only
// repeated work commits with NORMAL even under FULL (a destination's
// transaction in flight, its completion and backoff, and the stored
// answer to an inbound transaction, whose events were committed durably
// before it). In WAL mode they survive a crash of the process, and the
// next flushed commit makes them durable too; a power cut can only make
// a transaction go again or be processed again.
//
// Concurrent event writes ([DB.PersistEvents], [DB.PersistEventsForTxn])
// share one commit, and every caller returns once the shared commit is
// durable. The first writer opens a transaction and writes what the others
// queued, merged: their rows go into shared buffers written with one
// statement per table, and host log entries are numbered by the store.
// Writes that run together on purpose (the rooms of one inbound
// transaction) name themselves a [WriteGroup]; the transaction stays open
// for the group's writes still to come (Options.MaxGroupWait at most) and
// writes each as it arrives, so the rooms written first overlap the rooms
// still judged. When any merged write fails, nothing is kept and the
// group is written again write by write, each in a savepoint of its own,
// so that one failing write does not undo the others.
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
// Why FullSnapshotRatio is 0.25: with a full root of B entries, a new root
// is written after about ratio×B changed entries, so full rewrites cost
// 1/ratio rows per change (4 at 0.25) and a read costs at most B×(1+ratio)
// rows. Measured on a 100,000-member room after 1,000 membership changes
// (BenchmarkStateRead100k): ratio 0.005 rewrote the root once (105 rows
// written per change), ratios 0.05 and 0.25 wrote 5 rows per change with
// chains of at most 10 nodes, and full-state reads cost the same (about
// 7 ms with the root cached, 250 ms cold). The binary-counter chain keeps
// the per-change cost near log2(n) rows whatever the ratio, so the ratio
// only bounds how far reads drift from the root's size.
//
// Reads of full state take the full root from an in-memory cache of named
// snapshots (Options.StateCacheEntries; roots never change) and apply the
// chain's deltas on a copy. Single keys (StateEventBefore) read at most one
// row per chain node. Bulk writes (a join's state, edges, snapshot entries,
// current state, queue and host log rows) use multi-row INSERTs, in
// power-of-two chunks so every statement shape stays prepared. Events new
// to the database are numbered by the store (the writer is the only one)
// and written the same way; an event that was referenced before it
// arrived has a placeholder row (no JSON) that its arrival fills in.
//
// # Writing cheaply
//
// On our 2-CPU machine a system call costs microseconds, and SQLite
// writes each frame of its write-ahead log with two. walwrites.go
// replaces the unix VFS's pwrite and its neighbours (xSetSystemCall) to
// gather the frames a connection appends to its log and write them with
// one call when the commit frame is complete: before SQLite syncs the log
// or tells readers of the commit, so a commit is on disk exactly when it
// would have been. The log is copied back into the database every 10,000
// pages. Buffered rows are written with INSERT OR FAIL, and event rows
// without their numbers (the database gives the same ones, which the
// write checks), so that SQLite keeps no statement journal: a failed
// write undoes its whole transaction or savepoint anyway.
//
// # Caches
//
// What never changes, or changes only through the writer, is kept in
// memory once committed so that the next write need not read it: event
// and room numbers, state key numbers, the rows of recently written
// events (their number, outcome and state snapshots), and each room's
// forward extremities as its last write left them. Each is published only
// after the transaction that learnt it commits, and bounded (when full it
// starts again empty).
//
// # Concurrency
//
// A *DB is safe for concurrent use. Callers serialise writes to one room
// (the engine holds a per-room lock); the store itself serialises all
// writes on its single writer connection.
package store
