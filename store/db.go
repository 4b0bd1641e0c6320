package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Errors callers branch on.
var (
	// ErrNotFound is matched when the thing asked for is not stored.
	ErrNotFound = errors.New("store: not found")
	// ErrNoState is matched when an event's state is asked for but the
	// event is an outlier (held without the state before it).
	ErrNoState = errors.New("store: no state for outlier")
	// ErrSchemaTooNew is matched when the database was written by a newer
	// Ferry than this binary.
	ErrSchemaTooNew = errors.New("store: database schema is newer than this binary")
	// ErrConflict is matched when a write would replace something that
	// must not be replaced (an alias that exists, a room of another version).
	ErrConflict = errors.New("store: conflict")
)

// Options tunes a DB. The zero value gives the documented defaults.
type Options struct {
	// Readers is the size of the read pool. Default 4.
	Readers int
	// BusyTimeout is how long a connection waits for a lock. Default 5s.
	BusyTimeout time.Duration
	// Synchronous is SQLite's synchronous setting: "FULL" (default; a
	// commit survives power loss) or "NORMAL" (survives a process crash,
	// not power loss).
	Synchronous string
	// FullSnapshotRatio: a new full state snapshot is written when the
	// delta entries between a snapshot and its full root exceed the root's
	// entries times this ratio. Default 0.25.
	FullSnapshotRatio float64
	// MinDeltaRows is the delta size always allowed before a full snapshot
	// is written, so small rooms are not rewritten at every change.
	// Default 64.
	MinDeltaRows int
	// StateCacheEntries bounds the state entries of full snapshots kept
	// in memory for reads (about 100 bytes each). Default 500,000.
	StateCacheEntries int
	// Logger receives lifecycle logs. Default: none.
	Logger *zerolog.Logger
	// Now is the clock, for tests. Default time.Now.
	Now func() time.Time
	// MaxGroupWait bounds how long a merged write transaction stays open
	// for the writes still to come from its WriteGroups (the other rooms
	// of an inbound transaction). Default 5ms.
	MaxGroupWait time.Duration
	// ObserveTransaction, when set, is told how long each database
	// transaction took (write: the writer's, else a reader's), for
	// metrics. It must be fast and safe for concurrent use.
	ObserveTransaction func(write bool, d time.Duration)
}

func (o Options) withDefaults() Options {
	if o.Readers <= 0 {
		o.Readers = 4
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = 5 * time.Second
	}
	if o.Synchronous == "" {
		o.Synchronous = "FULL"
	}
	if o.MaxGroupWait <= 0 {
		o.MaxGroupWait = 5 * time.Millisecond
	}
	if o.FullSnapshotRatio <= 0 {
		o.FullSnapshotRatio = 0.25
	}
	if o.MinDeltaRows <= 0 {
		o.MinDeltaRows = 64
	}
	if o.StateCacheEntries <= 0 {
		o.StateCacheEntries = 500_000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// DB is the store. Open it with Open; it is safe for concurrent use.
type DB struct {
	path    string
	opts    Options
	log     zerolog.Logger
	d       *dialect
	writer  *sql.DB // one connection
	readers *sql.DB // read-only pool
	wstmts  *stmtPool
	rstmts  *stmtPool

	// stateKeys caches committed (type, state_key) numbers; numbers are
	// never reused, so the cache never needs invalidation.
	mu        sync.Mutex
	stateKeys map[StateKey]int64
	skNames   map[int64]StateKey

	hostLog   hostLogNotifier
	roots     rootCache
	nids      boundedCache[string, int64]
	roomNIDs  roomCache
	exts      boundedCache[int64, map[int64]string]
	eventRows boundedCache[string, eventRow]
	group     groupCommit
}

// ParseURL turns config's database.url into a file path: "sqlite:///abs",
// "sqlite://relative" and a plain path are accepted.
func ParseURL(url string) (string, error) {
	if rest, ok := strings.CutPrefix(url, "sqlite://"); ok {
		if rest == "" {
			return "", fmt.Errorf("store: database URL %q has no path", url)
		}
		return rest, nil
	}
	if i := strings.Index(url, "://"); i >= 0 {
		return "", fmt.Errorf("store: database URL %q: unsupported scheme %q (want sqlite://)", url, url[:i])
	}
	if url == "" {
		return "", errors.New("store: empty database path")
	}
	return url, nil
}

// Open opens (creating if needed) the SQLite database at path, which may
// be a plain path or a sqlite:// URL, and migrates it to the schema this
// binary knows.
func Open(ctx context.Context, path string, opts Options) (*DB, error) {
	p, err := ParseURL(path)
	if err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if err := installWALWrites(); err != nil && opts.Logger != nil {
		// Only slower: SQLite writes its log frame by frame.
		opts.Logger.Warn().Err(err).Msg("gathering write-ahead log writes is off")
	}
	db := &DB{
		path:      p,
		opts:      opts,
		log:       zerolog.Nop(),
		d:         sqliteDialect,
		stateKeys: make(map[StateKey]int64),
		skNames:   make(map[int64]StateKey),
	}
	db.hostLog.init()
	db.roots.limit = opts.StateCacheEntries
	db.nids.limit = nidCacheSize
	db.exts.limit = extremityCacheRooms
	db.eventRows.limit = eventRowCacheSize
	if opts.Logger != nil {
		db.log = *opts.Logger
	}
	if db.writer, err = sql.Open(db.d.driver, db.d.dsn(p, opts, false)); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", p, err)
	}
	db.wstmts = newStmtPool(db.writer)
	db.writer.SetMaxOpenConns(1)
	db.writer.SetMaxIdleConns(1)
	db.writer.SetConnMaxLifetime(0)
	db.writer.SetConnMaxIdleTime(0)
	if err := db.migrate(ctx); err != nil {
		db.writer.Close()
		return nil, err
	}
	if db.readers, err = sql.Open(db.d.driver, db.d.dsn(p, opts, true)); err != nil {
		db.writer.Close()
		return nil, fmt.Errorf("store: open %s: %w", p, err)
	}
	db.rstmts = newStmtPool(db.readers)
	db.readers.SetMaxOpenConns(opts.Readers)
	db.readers.SetMaxIdleConns(opts.Readers)
	if err := db.readers.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", p, err)
	}
	db.log.Info().Str("path", p).Msg("database open")
	return db, nil
}

// Close closes the database. Calls in flight fail.
func (db *DB) Close() error {
	var errs []error
	if db.rstmts != nil {
		db.rstmts.close()
	}
	if db.wstmts != nil {
		db.wstmts.close()
	}
	if db.readers != nil {
		errs = append(errs, db.readers.Close())
	}
	if db.writer != nil {
		errs = append(errs, db.writer.Close())
	}
	db.hostLog.close()
	return errors.Join(errs...)
}

// Path returns the database file path.
func (db *DB) Path() string { return db.path }

type migration struct {
	version int
	name    string
	sql     string
}

func (db *DB) migrations() ([]migration, error) {
	entries, err := fs.ReadDir(db.d.migrations, db.d.migrationsDir)
	if err != nil {
		return nil, fmt.Errorf("store: migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("store: migration %s: name must start with a positive number and '_'", name)
		}
		body, err := fs.ReadFile(db.d.migrations, db.d.migrationsDir+"/"+name)
		if err != nil {
			return nil, fmt.Errorf("store: migration %s: %w", name, err)
		}
		out = append(out, migration{version: v, name: name, sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("store: migration %s: expected number %d", m.name, i+1)
		}
	}
	return out, nil
}

// SchemaVersion returns the highest migration this binary knows.
func SchemaVersion() int {
	db := &DB{d: sqliteDialect}
	ms, err := db.migrations()
	if err != nil {
		return 0
	}
	return len(ms)
}

// migrate applies every migration newer than the database's version, each
// in its own transaction together with the version bump.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := db.migrations()
	if err != nil {
		return err
	}
	var current int
	if err := db.writer.QueryRowContext(ctx, db.d.userVersion).Scan(&current); err != nil {
		return fmt.Errorf("store: open %s: %w", db.path, err)
	}
	if current > len(ms) {
		return fmt.Errorf("%w: %s has schema version %d, this binary knows up to %d; run a newer Ferry", ErrSchemaTooNew, db.path, current, len(ms))
	}
	for _, m := range ms[current:] {
		err := db.write(ctx, func(t *txn) error {
			if _, err := t.tx.ExecContext(ctx, m.sql); err != nil {
				return err
			}
			_, err := t.tx.ExecContext(ctx, db.d.setUserVersion(m.version))
			return err
		})
		if err != nil {
			return fmt.Errorf("store: migration %s: %w", m.name, err)
		}
		db.log.Info().Str("migration", m.name).Msg("database migrated")
	}
	return nil
}

// write runs fn in a transaction on the writer connection.
func (db *DB) write(ctx context.Context, fn func(t *txn) error) error {
	if observe := db.opts.ObserveTransaction; observe != nil {
		defer func(start time.Time) { observe(true, time.Since(start)) }(time.Now())
	}
	tx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	t := &txn{ctx: ctx, tx: tx, pool: db.wstmts, stmts: make(map[string]*sql.Stmt)}
	if err := fn(t); err != nil {
		_ = tx.Rollback()
		return err
	}
	err = tx.Commit()
	db.wstmts.warm(ctx, t.unpooled)
	return err
}

// read runs fn in a read-only transaction from the pool, so every query
// in fn sees one consistent snapshot of the database.
func (db *DB) read(ctx context.Context, fn func(t *txn) error) error {
	if observe := db.opts.ObserveTransaction; observe != nil {
		defer func(start time.Time) { observe(false, time.Since(start)) }(time.Now())
	}
	tx, err := db.readers.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	t := &txn{ctx: ctx, tx: tx, pool: db.rstmts, stmts: make(map[string]*sql.Stmt)}
	err = fn(t)
	_ = tx.Rollback() // read-only: nothing to undo
	db.rstmts.warm(ctx, t.unpooled)
	return err
}

// readRow runs one single-row query outside a transaction: one
// statement on the read pool instead of three (BEGIN, the query,
// ROLLBACK), for the lookups made once per inbound PDU or transaction.
// One statement sees one snapshot of the database, as a transaction
// would.
func (db *DB) readRow(ctx context.Context, q string, args []any, dest ...any) error {
	if observe := db.opts.ObserveTransaction; observe != nil {
		defer func(start time.Time) { observe(false, time.Since(start)) }(time.Now())
	}
	st := db.rstmts.get(q)
	if st == nil {
		db.rstmts.warm(ctx, []string{q})
		if st = db.rstmts.get(q); st == nil {
			return db.readers.QueryRowContext(ctx, q, args...).Scan(dest...)
		}
	}
	return st.QueryRowContext(ctx, args...).Scan(dest...)
}

func (db *DB) now() int64 { return db.opts.Now().UnixMilli() }

// IntegrityCheck runs SQLite's integrity check and the store's own
// invariants: every held, non-outlier event has its state snapshot, every
// forward extremity and current-state entry is a held event, and every
// snapshot's parent exists.
func (db *DB) IntegrityCheck(ctx context.Context) error {
	return db.read(ctx, func(t *txn) error {
		results, err := t.queryStrings(db.d.integrityCheck)
		if err != nil {
			return err
		}
		var problems []string
		for _, s := range results {
			if s != "ok" {
				problems = append(problems, s)
			}
		}
		for _, inv := range db.d.invariants {
			var n int64
			if err := t.queryRow(inv.query).Scan(&n); err != nil {
				return fmt.Errorf("invariant %q: %w", inv.name, err)
			}
			if n != 0 {
				problems = append(problems, fmt.Sprintf("%s: %d rows", inv.name, n))
			}
		}
		if len(problems) > 0 {
			return fmt.Errorf("store: integrity: %s", strings.Join(problems, "; "))
		}
		return nil
	})
}
