package store

import (
	"embed"
	"fmt"
	"strings"
	"sync"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql
var sqliteMigrations embed.FS

// dialect is everything that differs between SQL backends: the driver,
// the DSN, the migrations and the text of every statement. Callers never
// see it; a PostgreSQL backend is a second value of this struct.
type dialect struct {
	driver        string
	dsn           func(path string, o Options, readOnly bool) string
	migrations    embed.FS
	migrationsDir string

	userVersion    string
	setUserVersion func(v int) string
	integrityCheck string
	invariants     []invariant

	// rooms
	lookupRoom, insertRoom, setRoomStatus, roomByID, allRooms string
	roomCurrentSnapshot, setRoomCurrentSnapshot               string

	// events and edges
	eventRows, newEventRows                                    insertShape
	existingEventIDs                                           string
	lookupEventNID, insertPlaceholder, heldEventNID, eventHeld string
	prevEdgeRows, authEdgeRows                                 insertShape
	multiInsert                                                func(s insertShape, rows int) string
	eventByID, eventsByIDs, eventsByNIDs, eventsHeld           string
	heldNIDsInRoom, prevEventsOf, eventIDByNID, eventStateRow  string
	redactEvent, authChain, authChildren                       string
	forwardExtremities                                         string
	extremityRows, droppedExtremityRows                        insertShape
	extremityNIDs, maxEventNID, heldFollowers                  string

	// state
	lookupStateKey, stateKeyByNID                  string
	stateKeyRows                                   insertShape
	insertSnapshot, setAfterSnapshot               string
	stateEntryRows, currentStateRows               insertShape
	snapshotChain, stateEntries, stateEntriesNamed string
	stateEntry                                     string
	currentState, currentStateEvent                string
	deleteCurrentState, joinedServers, members     string
	eventAtOrAfterTS, eventAtOrBeforeTS            string

	// users, aliases, keys
	putUser, userByID, allUsers                          string
	insertAlias, aliasByName, deleteAlias, aliasesOfRoom string
	putServerKey, serverKeys                             string

	// inbound transactions, outbound queues
	txnResponse, putTxnResponse, expireTxns                   string
	outboundRows                                              insertShape
	enqueueEDU, pendingDestinations                           string
	peekPDUs, peekEDUs, beginTxn, deleteTxnItems, completeTxn string
	recordFailure, trimPDUs, destination, allDestinations     string
	pendingCount                                              string
	destinationUpTo, pendingCountUpTo, deleteItems            string

	// host log
	hostLogRows, numberedHostLogRows            insertShape
	readHostLog, hostLogHead, cursor, setCursor string

	// diagnostics
	statsCounts, pageCount, pageSize, allSnapshotParents string
	gauges                                               string
}

// cachedMultiInsert memoises the text of multi-row INSERTs, which are
// built for a few shapes and sizes only.
func cachedMultiInsert(build func(s insertShape, rows int) string) func(s insertShape, rows int) string {
	type key struct {
		table string
		rows  int
	}
	var cache sync.Map
	return func(s insertShape, rows int) string {
		k := key{fmt.Sprint(s.table, "\x00", s.onClause, "\x00", s.deletes, s.impliedKey), rows}
		if q, ok := cache.Load(k); ok {
			return q.(string)
		}
		q := build(s, rows)
		cache.Store(k, q)
		return q
	}
}

// invariant is a query counting rows that break a rule of the store.
type invariant struct {
	name  string
	query string
}

const sqliteEventCols = `e.event_id, r.version, e.outlier, e.rejected_reason, e.soft_failed, e.redacted, e.json`

var sqliteDialect = &dialect{
	driver: "sqlite",
	dsn: func(path string, o Options, readOnly bool) string {
		var b strings.Builder
		b.WriteString("file:")
		b.WriteString(path)
		fmt.Fprintf(&b, "?_pragma=busy_timeout(%d)", o.BusyTimeout.Milliseconds())
		b.WriteString("&_pragma=foreign_keys(1)")
		fmt.Fprintf(&b, "&_pragma=synchronous(%s)", o.Synchronous)
		if readOnly {
			b.WriteString("&_pragma=query_only(1)")
		} else {
			// wal_autocheckpoint: the log is copied back into the database
			// every 10,000 pages (40 MB) instead of SQLite's 1,000. A page
			// written again before the copy is copied once, and the
			// transaction that reaches the mark (and waits for the copy)
			// comes ten times less often.
			b.WriteString("&_pragma=journal_mode(WAL)&_pragma=cache_size(-32768)&_pragma=temp_store(MEMORY)&_txlock=immediate&_pragma=wal_autocheckpoint(10000)")
		}
		return b.String()
	},
	migrations:     sqliteMigrations,
	migrationsDir:  "migrations",
	userVersion:    `PRAGMA user_version`,
	setUserVersion: func(v int) string { return fmt.Sprintf("PRAGMA user_version = %d", v) },
	integrityCheck: `PRAGMA integrity_check`,
	invariants: []invariant{
		{"held events without the state before them", `SELECT COUNT(*) FROM events WHERE json IS NOT NULL AND outlier = 0 AND before_snapshot_nid IS NULL`},
		{"events pointing at missing snapshots", `SELECT COUNT(*) FROM events e WHERE (e.before_snapshot_nid > 0 AND NOT EXISTS (SELECT 1 FROM state_snapshots s WHERE s.snapshot_nid = e.before_snapshot_nid)) OR (e.after_snapshot_nid > 0 AND NOT EXISTS (SELECT 1 FROM state_snapshots s WHERE s.snapshot_nid = e.after_snapshot_nid))`},
		{"snapshots with a missing parent", `SELECT COUNT(*) FROM state_snapshots c WHERE c.parent_nid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM state_snapshots p WHERE p.snapshot_nid = c.parent_nid)`},
		{"snapshots with missing entries", `SELECT COUNT(*) FROM state_snapshots s WHERE s.entries != (SELECT COUNT(*) FROM state_entries e WHERE e.snapshot_nid = s.snapshot_nid)`},
		{"rooms pointing at a missing current snapshot", `SELECT COUNT(*) FROM rooms r WHERE r.current_snapshot_nid != 0 AND NOT EXISTS (SELECT 1 FROM state_snapshots s WHERE s.snapshot_nid = r.current_snapshot_nid)`},
		{"forward extremities that are not held events", `SELECT COUNT(*) FROM forward_extremities f LEFT JOIN events e ON e.event_nid = f.event_nid WHERE e.json IS NULL`},
		{"queued PDUs that are not held events", `SELECT COUNT(*) FROM outbound o LEFT JOIN events e ON e.event_nid = o.event_nid WHERE o.event_nid IS NOT NULL AND e.json IS NULL`},
		{"host log entries naming events not held", `SELECT COUNT(*) FROM host_log h LEFT JOIN events e ON e.event_nid = h.event_nid WHERE h.event_nid IS NOT NULL AND e.json IS NULL`},
	},

	lookupRoom:             `SELECT room_nid, version FROM rooms WHERE room_id = ?`,
	insertRoom:             `INSERT INTO rooms (room_id, version, status, created_ts) VALUES (?, ?, ?, ?) RETURNING room_nid`,
	setRoomStatus:          `UPDATE rooms SET status = ? WHERE room_nid = ?`,
	roomByID:               `SELECT room_id, version, status, created_ts FROM rooms WHERE room_id = ?`,
	allRooms:               `SELECT room_id, version, status, created_ts FROM rooms ORDER BY room_id`,
	roomCurrentSnapshot:    `SELECT current_snapshot_nid FROM rooms WHERE room_nid = ?`,
	setRoomCurrentSnapshot: `UPDATE rooms SET current_snapshot_nid = ? WHERE room_nid = ?`,

	eventRows: insertShape{"events", []string{"event_id", "room_nid", "state_key_nid", "membership", "depth",
		"origin_server_ts", "outlier", "rejected_reason", "soft_failed", "before_snapshot_nid", "json"},
		`ON CONFLICT (event_id) DO UPDATE SET room_nid = excluded.room_nid, state_key_nid = excluded.state_key_nid,
		membership = excluded.membership, depth = excluded.depth, origin_server_ts = excluded.origin_server_ts,
		outlier = excluded.outlier, rejected_reason = excluded.rejected_reason, soft_failed = excluded.soft_failed,
		before_snapshot_nid = excluded.before_snapshot_nid, json = excluded.json
	WHERE events.json IS NULL OR (events.outlier = 1 AND excluded.outlier = 0)
	RETURNING event_nid, event_id`, false, false},
	newEventRows: insertShape{"events", []string{"event_nid", "event_id", "room_nid", "state_key_nid", "membership", "depth",
		"origin_server_ts", "outlier", "rejected_reason", "soft_failed", "before_snapshot_nid", "json"}, "", false, true},
	existingEventIDs:     `SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))`,
	lookupEventNID:       `SELECT event_nid FROM events WHERE event_id = ?`,
	insertPlaceholder:    `INSERT INTO events (event_id, room_nid) VALUES (?, ?) RETURNING event_nid`,
	heldEventNID:         `SELECT event_nid FROM events WHERE event_id = ? AND json IS NOT NULL`,
	eventHeld:            `SELECT json IS NOT NULL FROM events WHERE event_id = ?`,
	prevEdgeRows:         insertShape{"event_prev", []string{"event_nid", "prev_nid"}, "ON CONFLICT DO NOTHING", false, false},
	authEdgeRows:         insertShape{"event_auth", []string{"event_nid", "auth_nid"}, "ON CONFLICT DO NOTHING", false, false},
	extremityRows:        insertShape{"forward_extremities", []string{"room_nid", "event_nid"}, "ON CONFLICT DO NOTHING", false, false},
	droppedExtremityRows: insertShape{"forward_extremities", []string{"room_nid", "event_nid"}, "", true, false},
	multiInsert: cachedMultiInsert(func(s insertShape, rows int) string {
		var b strings.Builder
		columns := s.columns
		switch {
		case s.deletes:
			fmt.Fprintf(&b, "DELETE FROM %s WHERE (%s) IN (VALUES ", s.table, strings.Join(columns, ", "))
		default:
			if s.impliedKey {
				columns = columns[1:]
			}
			// OR FAIL: a failing row need not undo the rows before it in
			// the statement (a failed write undoes its whole transaction
			// or savepoint), so SQLite keeps no statement journal, a copy
			// of every page the statement changes.
			fmt.Fprintf(&b, "INSERT OR FAIL INTO %s (%s) VALUES ", s.table, strings.Join(columns, ", "))
		}
		row := "(?" + strings.Repeat(", ?", len(columns)-1) + ")"
		for i := range rows {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(row)
		}
		if s.deletes {
			b.WriteString(")")
		}
		if s.onClause != "" {
			b.WriteString(" " + s.onClause)
		}
		return b.String()
	}),
	eventByID: `SELECT ` + sqliteEventCols + ` FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.event_id = ? AND e.json IS NOT NULL`,
	eventsByIDs: `SELECT ` + sqliteEventCols + ` FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.event_id IN (SELECT value FROM json_each(?)) AND e.json IS NOT NULL`,
	eventsByNIDs: `SELECT e.event_nid, ` + sqliteEventCols + ` FROM events e JOIN rooms r ON r.room_nid = e.room_nid
		WHERE e.event_nid IN (SELECT value FROM json_each(?)) AND e.json IS NOT NULL`,
	eventsHeld:     `SELECT event_id, json IS NOT NULL FROM events WHERE event_id IN (SELECT value FROM json_each(?))`,
	heldNIDsInRoom: `SELECT event_nid, depth FROM events WHERE event_id IN (SELECT value FROM json_each(?)) AND room_nid = ? AND json IS NOT NULL`,
	prevEventsOf: `SELECT e.event_nid, e.depth FROM event_prev p JOIN events e ON e.event_nid = p.prev_nid
		WHERE p.event_nid = ? AND e.room_nid = ? AND e.json IS NOT NULL`,
	eventIDByNID: `SELECT event_id FROM events WHERE event_nid = ?`,
	eventStateRow: `SELECT event_nid, state_key_nid, json IS NOT NULL, outlier, rejected_reason IS NOT NULL,
		before_snapshot_nid, after_snapshot_nid FROM events WHERE event_id = ?`,
	redactEvent: `UPDATE events SET json = ?, redacted = 1 WHERE event_id = ?`,
	authChain: `WITH RECURSIVE chain(nid) AS (
		SELECT a.auth_nid FROM events e JOIN event_auth a ON a.event_nid = e.event_nid
			WHERE e.event_id IN (SELECT value FROM json_each(?))
		UNION
		SELECT a.auth_nid FROM chain c JOIN event_auth a ON a.event_nid = c.nid
	)
	SELECT e.event_nid, e.event_id FROM chain c JOIN events e ON e.event_nid = c.nid WHERE e.json IS NOT NULL`,
	authChildren: `SELECT a.event_nid, e.event_id FROM event_auth a JOIN events e ON e.event_nid = a.event_nid
		WHERE a.auth_nid = ? AND e.json IS NOT NULL`,
	heldFollowers: `SELECT COUNT(*) FROM event_prev p JOIN events c ON c.event_nid = p.event_nid
		WHERE p.prev_nid = ? AND c.json IS NOT NULL AND c.outlier = 0
			AND c.rejected_reason IS NULL AND c.soft_failed = 0`,
	extremityNIDs: `SELECT f.event_nid, e.event_id FROM forward_extremities f JOIN events e ON e.event_nid = f.event_nid WHERE f.room_nid = ?`,
	maxEventNID:   `SELECT COALESCE(MAX(event_nid), 0) FROM events`,
	forwardExtremities: `SELECT e.event_id FROM forward_extremities f JOIN events e ON e.event_nid = f.event_nid
		WHERE f.room_nid = ? ORDER BY e.event_id`,

	lookupStateKey: `SELECT state_key_nid FROM state_keys WHERE type = ? AND state_key = ?`,
	stateKeyRows: insertShape{"state_keys", []string{"type", "state_key"},
		"ON CONFLICT (type, state_key) DO NOTHING RETURNING state_key_nid, type, state_key", false, false},
	stateKeyByNID:  `SELECT type, state_key FROM state_keys WHERE state_key_nid = ?`,
	insertSnapshot: `INSERT INTO state_snapshots (room_nid, parent_nid, span, entries, chain_rows, full_rows) VALUES (?, ?, ?, ?, ?, ?) RETURNING snapshot_nid`,
	stateEntryRows: insertShape{"state_entries", []string{"snapshot_nid", "state_key_nid", "event_nid"}, "", false, false},
	currentStateRows: insertShape{"current_state", []string{"room_nid", "state_key_nid", "event_nid"},
		"ON CONFLICT (room_nid, state_key_nid) DO UPDATE SET event_nid = excluded.event_nid", false, false},
	setAfterSnapshot: `UPDATE events SET after_snapshot_nid = ? WHERE event_nid = ?`,
	snapshotChain: `WITH RECURSIVE c(nid, parent, span, entries, chain_rows, full_rows, lvl) AS (
		SELECT snapshot_nid, parent_nid, span, entries, chain_rows, full_rows, 0 FROM state_snapshots WHERE snapshot_nid = ?
		UNION ALL
		SELECT s.snapshot_nid, s.parent_nid, s.span, s.entries, s.chain_rows, s.full_rows, c.lvl + 1
			FROM state_snapshots s JOIN c ON s.snapshot_nid = c.parent
	)
	SELECT nid, parent, span, entries, chain_rows, full_rows FROM c ORDER BY lvl`,
	stateEntries: `SELECT state_key_nid, event_nid FROM state_entries WHERE snapshot_nid = ?`,
	stateEntriesNamed: `SELECT se.state_key_nid, sk.type, sk.state_key, e.event_id
		FROM state_entries se JOIN state_keys sk ON sk.state_key_nid = se.state_key_nid
		LEFT JOIN events e ON e.event_nid = se.event_nid AND se.event_nid != 0
		WHERE se.snapshot_nid = ?`,
	stateEntry: `SELECT event_nid FROM state_entries WHERE snapshot_nid = ? AND state_key_nid = ?`,
	currentState: `SELECT sk.type, sk.state_key, e.event_id FROM current_state cs
		JOIN state_keys sk ON sk.state_key_nid = cs.state_key_nid
		JOIN events e ON e.event_nid = cs.event_nid WHERE cs.room_nid = ?`,
	currentStateEvent: `SELECT e.event_id FROM state_keys sk
		JOIN current_state cs ON cs.state_key_nid = sk.state_key_nid AND cs.room_nid = ?1
		JOIN events e ON e.event_nid = cs.event_nid WHERE sk.type = ?2 AND sk.state_key = ?3`,
	deleteCurrentState: `DELETE FROM current_state WHERE room_nid = ? AND state_key_nid = ?`,
	joinedServers: `SELECT DISTINCT substr(sk.state_key, instr(sk.state_key, ':') + 1) FROM current_state cs
		JOIN state_keys sk ON sk.state_key_nid = cs.state_key_nid
		JOIN events e ON e.event_nid = cs.event_nid
		WHERE cs.room_nid = ? AND sk.type = 'm.room.member' AND e.membership = 'join' ORDER BY 1`,
	// Timeline events only: not outliers, rejected or soft-failed.
	eventAtOrAfterTS: `SELECT event_id, origin_server_ts FROM events
		WHERE room_nid = ? AND origin_server_ts >= ? AND outlier = 0 AND rejected_reason IS NULL AND soft_failed = 0 AND json IS NOT NULL
		ORDER BY origin_server_ts ASC, event_nid ASC LIMIT 1`,
	eventAtOrBeforeTS: `SELECT event_id, origin_server_ts FROM events
		WHERE room_nid = ? AND origin_server_ts <= ? AND outlier = 0 AND rejected_reason IS NULL AND soft_failed = 0 AND json IS NOT NULL
		ORDER BY origin_server_ts DESC, event_nid DESC LIMIT 1`,
	members: `SELECT sk.state_key FROM current_state cs
		JOIN state_keys sk ON sk.state_key_nid = cs.state_key_nid
		JOIN events e ON e.event_nid = cs.event_nid
		WHERE cs.room_nid = ? AND sk.type = 'm.room.member' AND e.membership = ? ORDER BY 1`,

	putUser: `INSERT INTO users (user_id, displayname, avatar_url, created_ts) VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname, avatar_url = excluded.avatar_url`,
	userByID:      `SELECT user_id, displayname, avatar_url, created_ts FROM users WHERE user_id = ?`,
	allUsers:      `SELECT user_id, displayname, avatar_url, created_ts FROM users ORDER BY user_id`,
	insertAlias:   `INSERT INTO room_aliases (alias, room_id, servers, creator, created_ts) VALUES (?, ?, ?, ?, ?) ON CONFLICT (alias) DO NOTHING`,
	aliasByName:   `SELECT alias, room_id, servers, creator, created_ts FROM room_aliases WHERE alias = ?`,
	deleteAlias:   `DELETE FROM room_aliases WHERE alias = ?`,
	aliasesOfRoom: `SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias`,
	putServerKey: `INSERT INTO server_keys (server_name, key_id, public_key, valid_until_ts, expired, fetched_ts, source)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key,
			valid_until_ts = excluded.valid_until_ts, expired = excluded.expired,
			fetched_ts = excluded.fetched_ts, source = excluded.source`,
	serverKeys: `SELECT key_id, public_key, valid_until_ts, expired, fetched_ts, source FROM server_keys WHERE server_name = ? ORDER BY key_id`,

	txnResponse: `SELECT response FROM inbound_txns WHERE origin = ? AND txn_id = ?`,
	putTxnResponse: `INSERT INTO inbound_txns (origin, txn_id, response, received_ts) VALUES (?, ?, ?, ?)
		ON CONFLICT (origin, txn_id) DO UPDATE SET response = excluded.response`,
	expireTxns:          `DELETE FROM inbound_txns WHERE received_ts < ?`,
	outboundRows:        insertShape{"outbound", []string{"destination", "event_nid"}, "", false, false},
	enqueueEDU:          `INSERT INTO outbound (destination, edu) VALUES (?, ?)`,
	pendingDestinations: `SELECT destination FROM outbound UNION SELECT destination FROM destinations WHERE txn_id != '' ORDER BY 1`,
	peekPDUs: `SELECT o.pos, e.event_id, e.json FROM outbound o JOIN events e ON e.event_nid = o.event_nid
		WHERE o.destination = ?1 AND o.pos NOT IN (SELECT value FROM json_each(COALESCE(
			(SELECT txn_positions FROM destinations WHERE destination = ?1), '[]')))
		ORDER BY o.pos LIMIT ?2`,
	peekEDUs: `SELECT o.pos, o.edu FROM outbound o
		WHERE o.destination = ?1 AND o.edu IS NOT NULL AND o.pos NOT IN (SELECT value FROM json_each(COALESCE(
			(SELECT txn_positions FROM destinations WHERE destination = ?1), '[]')))
		ORDER BY o.pos LIMIT ?2`,
	beginTxn: `INSERT INTO destinations (destination, txn_id, txn_body, txn_positions) VALUES (?, ?, ?, ?)
		ON CONFLICT (destination) DO UPDATE SET txn_id = excluded.txn_id, txn_body = excluded.txn_body,
			txn_positions = excluded.txn_positions`,
	deleteTxnItems: `DELETE FROM outbound WHERE destination = ?1 AND pos IN (SELECT value FROM json_each(COALESCE(
		(SELECT txn_positions FROM destinations WHERE destination = ?1), '[]')))`,
	completeTxn: `INSERT INTO destinations (destination, last_success_ts) VALUES (?2, ?1)
		ON CONFLICT (destination) DO UPDATE SET txn_id = '', txn_body = NULL, txn_positions = '[]',
			failures = 0, backoff_until = 0, last_success_ts = excluded.last_success_ts`,
	recordFailure: `INSERT INTO destinations (destination, backoff_until, failures, last_failure_ts, last_error) VALUES (?, ?, 1, ?, ?)
		ON CONFLICT (destination) DO UPDATE SET backoff_until = excluded.backoff_until, failures = destinations.failures + 1,
			last_failure_ts = excluded.last_failure_ts, last_error = excluded.last_error`,
	trimPDUs: `DELETE FROM outbound WHERE destination = ?1 AND event_nid IS NOT NULL
		AND pos NOT IN (SELECT value FROM json_each(COALESCE((SELECT txn_positions FROM destinations WHERE destination = ?1), '[]')))
		AND pos NOT IN (SELECT pos FROM outbound WHERE destination = ?1 AND event_nid IS NOT NULL ORDER BY pos DESC LIMIT ?2)`,
	destination: `SELECT d.destination, d.backoff_until, d.failures, d.last_success_ts, d.last_failure_ts, d.last_error,
		d.txn_id, d.txn_body, d.txn_positions, (SELECT COUNT(*) FROM outbound o WHERE o.destination = d.destination)
		FROM destinations d WHERE d.destination = ?`,
	allDestinations: `SELECT d.destination, d.backoff_until, d.failures, d.last_success_ts, d.last_failure_ts, d.last_error,
		d.txn_id, d.txn_body, d.txn_positions, (SELECT COUNT(*) FROM outbound o WHERE o.destination = d.destination)
		FROM destinations d ORDER BY d.destination`,
	pendingCount: `SELECT COUNT(*) FROM outbound WHERE destination = ?`,
	destinationUpTo: `SELECT d.destination, d.backoff_until, d.failures, d.last_success_ts, d.last_failure_ts, d.last_error,
		d.txn_id, d.txn_body, d.txn_positions,
		(SELECT COUNT(*) FROM (SELECT 1 FROM outbound o WHERE o.destination = d.destination LIMIT ?2))
		FROM destinations d WHERE d.destination = ?1`,
	deleteItems:      `DELETE FROM outbound WHERE destination = ?1 AND pos IN (SELECT value FROM json_each(?2))`,
	pendingCountUpTo: `SELECT COUNT(*) FROM (SELECT 1 FROM outbound WHERE destination = ?1 LIMIT ?2)`,

	hostLogRows:         insertShape{"host_log", []string{"kind", "room_id", "event_nid", "payload", "ts"}, "RETURNING pos", false, false},
	numberedHostLogRows: insertShape{"host_log", []string{"pos", "kind", "room_id", "event_nid", "payload", "ts"}, "", false, false},
	readHostLog: `SELECT h.pos, h.kind, h.room_id, e.event_id, COALESCE(e.json, h.payload), h.ts
		FROM host_log h LEFT JOIN events e ON e.event_nid = h.event_nid
		WHERE h.pos > ? ORDER BY h.pos LIMIT ?`,
	hostLogHead: `SELECT COALESCE(MAX(pos), 0) FROM host_log`,
	gauges: `SELECT
		(SELECT COUNT(*) FROM rooms WHERE current_snapshot_nid != 0),
		(SELECT COUNT(DISTINCT substr(sk.state_key, instr(sk.state_key, ':') + 1))
			FROM current_state cs
			JOIN state_keys sk ON sk.state_key_nid = cs.state_key_nid
			JOIN events e ON e.event_nid = cs.event_nid
			WHERE sk.type = 'm.room.member' AND e.membership = 'join'),
		(SELECT COALESCE(MAX(pos), 0) FROM host_log),
		(SELECT COUNT(*) FROM outbound)`,
	statsCounts: `SELECT (SELECT COUNT(*) FROM events WHERE json IS NOT NULL), (SELECT COUNT(*) FROM state_snapshots),
		(SELECT COUNT(*) FROM state_snapshots WHERE parent_nid IS NULL), (SELECT COUNT(*) FROM state_entries)`,
	pageCount:          `SELECT page_count - freelist_count FROM pragma_page_count(), pragma_freelist_count()`,
	pageSize:           `PRAGMA page_size`,
	allSnapshotParents: `SELECT snapshot_nid, parent_nid FROM state_snapshots`,
	cursor:             `SELECT pos FROM host_cursors WHERE name = ?`,
	setCursor: `INSERT INTO host_cursors (name, pos) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET pos = MAX(host_cursors.pos, excluded.pos)`,
}
