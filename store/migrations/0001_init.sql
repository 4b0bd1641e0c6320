-- Ferry schema, version 1 (SQLite dialect).
--
-- Numbering: events, rooms, (type, state_key) pairs and state snapshots get
-- integer IDs ("nids"); text IDs appear once, in their own unique column.
-- JSON is stored once, as received (canonical bytes, BLOB).

-- rooms: one row per room the server knows.
CREATE TABLE rooms (
    room_nid             INTEGER PRIMARY KEY,
    room_id              TEXT    NOT NULL UNIQUE,
    version              TEXT    NOT NULL,            -- room version on the wire ("10", "12")
    status               TEXT    NOT NULL DEFAULT '', -- our relation to it: created, joined, invited, left, ...
    current_snapshot_nid INTEGER NOT NULL DEFAULT 0,  -- state_snapshots row of the current state (0: none yet)
    created_ts           INTEGER NOT NULL             -- when the row was made, ms since the epoch
);

-- state_keys: every (type, state_key) pair ever seen, numbered.
CREATE TABLE state_keys (
    state_key_nid INTEGER PRIMARY KEY,
    type          TEXT NOT NULL,
    state_key     TEXT NOT NULL,
    UNIQUE (type, state_key)
);

-- events: one row per event, stored once. A row whose json is NULL is a
-- placeholder: the event is referenced (prev or auth edge) but not held.
CREATE TABLE events (
    event_nid           INTEGER PRIMARY KEY,
    event_id            TEXT    NOT NULL UNIQUE,
    room_nid            INTEGER NOT NULL,
    state_key_nid       INTEGER NOT NULL DEFAULT 0, -- 0: not a state event
    membership          TEXT,                       -- content.membership of m.room.member events
    depth               INTEGER NOT NULL DEFAULT 0,
    origin_server_ts    INTEGER NOT NULL DEFAULT 0,
    outlier             INTEGER NOT NULL DEFAULT 0, -- 1: held without the state before it
    rejected_reason     TEXT,                       -- non-NULL: rejected, and why
    soft_failed         INTEGER NOT NULL DEFAULT 0,
    before_snapshot_nid INTEGER,                    -- state before the event (0: empty; NULL for outliers)
    after_snapshot_nid  INTEGER,                    -- state after it, filled in when first needed
    json                BLOB,                       -- canonical JSON as received (redacted form once redacted)
    redacted            INTEGER NOT NULL DEFAULT 0  -- 1: a redaction was applied to json
);

-- /timestamp_to_event: the room's events by time.
CREATE INDEX events_by_room_ts ON events (room_nid, origin_server_ts);

-- Edges. Both directions are indexed: forwards for auth chains and
-- /get_missing_events, backwards for extremity upkeep.
CREATE TABLE event_prev (
    event_nid INTEGER NOT NULL,
    prev_nid  INTEGER NOT NULL,
    PRIMARY KEY (event_nid, prev_nid)
) WITHOUT ROWID;
CREATE INDEX event_prev_by_prev ON event_prev (prev_nid, event_nid);

CREATE TABLE event_auth (
    event_nid INTEGER NOT NULL,
    auth_nid  INTEGER NOT NULL,
    PRIMARY KEY (event_nid, auth_nid)
) WITHOUT ROWID;
CREATE INDEX event_auth_by_auth ON event_auth (auth_nid, event_nid);

-- State snapshots share structure. A full snapshot (parent NULL) lists the
-- whole state; any other snapshot is its parent plus its own entries. Along
-- a chain, spans (how many single snapshots a node stands for) halve at
-- every step, so chains stay logarithmic in the changes since the full root.
CREATE TABLE state_snapshots (
    snapshot_nid INTEGER PRIMARY KEY,
    room_nid     INTEGER NOT NULL,
    parent_nid   INTEGER,          -- NULL: full snapshot
    span         INTEGER NOT NULL, -- snapshots merged into this node (0 for a full one)
    entries      INTEGER NOT NULL, -- entries of this node
    chain_rows   INTEGER NOT NULL, -- entries of this node and its ancestors below the full root
    full_rows    INTEGER NOT NULL  -- entries of the full root
);

CREATE TABLE state_entries (
    snapshot_nid  INTEGER NOT NULL,
    state_key_nid INTEGER NOT NULL,
    event_nid     INTEGER NOT NULL, -- 0: the key is removed
    PRIMARY KEY (snapshot_nid, state_key_nid)
) WITHOUT ROWID;

-- current_state materialises rooms.current_snapshot_nid for key lookups.
CREATE TABLE current_state (
    room_nid      INTEGER NOT NULL,
    state_key_nid INTEGER NOT NULL,
    event_nid     INTEGER NOT NULL,
    PRIMARY KEY (room_nid, state_key_nid)
) WITHOUT ROWID;

CREATE TABLE forward_extremities (
    room_nid  INTEGER NOT NULL,
    event_nid INTEGER NOT NULL,
    PRIMARY KEY (room_nid, event_nid)
) WITHOUT ROWID;

-- users: local users the host created.
CREATE TABLE users (
    user_id     TEXT PRIMARY KEY,
    displayname TEXT NOT NULL DEFAULT '',
    avatar_url  TEXT NOT NULL DEFAULT '',
    created_ts  INTEGER NOT NULL
);

CREATE TABLE room_aliases (
    alias      TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    servers    TEXT NOT NULL, -- JSON array of server names
    creator    TEXT NOT NULL,
    created_ts INTEGER NOT NULL
);
CREATE INDEX room_aliases_by_room ON room_aliases (room_id);

-- server_keys: remote servers' verify keys (keys.StoredKey).
CREATE TABLE server_keys (
    server_name    TEXT    NOT NULL,
    key_id         TEXT    NOT NULL,
    public_key     BLOB    NOT NULL,
    valid_until_ts INTEGER NOT NULL,
    expired        INTEGER NOT NULL, -- 1: from old_verify_keys
    fetched_ts     INTEGER NOT NULL,
    source         TEXT    NOT NULL, -- "direct" or "notary:<server>"
    PRIMARY KEY (server_name, key_id)
) WITHOUT ROWID;

-- inbound_txns de-duplicates /send transactions.
CREATE TABLE inbound_txns (
    origin      TEXT    NOT NULL,
    txn_id      TEXT    NOT NULL,
    response    BLOB    NOT NULL, -- the JSON body we answered
    received_ts INTEGER NOT NULL,
    PRIMARY KEY (origin, txn_id)
) WITHOUT ROWID;
CREATE INDEX inbound_txns_by_ts ON inbound_txns (received_ts);

-- outbound: per-destination queue of PDUs (event_nid) and EDUs (edu JSON).
CREATE TABLE outbound (
    pos         INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT    NOT NULL,
    event_nid   INTEGER, -- a PDU
    edu         BLOB     -- or an EDU's JSON
);
CREATE INDEX outbound_by_destination ON outbound (destination, pos);

CREATE TABLE destinations (
    destination     TEXT PRIMARY KEY,
    backoff_until   INTEGER NOT NULL DEFAULT 0, -- ms since the epoch; 0: none
    failures        INTEGER NOT NULL DEFAULT 0, -- consecutive
    last_success_ts INTEGER NOT NULL DEFAULT 0,
    last_failure_ts INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    txn_id          TEXT    NOT NULL DEFAULT '', -- transaction in flight ('' none)
    txn_body        BLOB,                        -- its exact body, resent under the same ID
    txn_positions   TEXT    NOT NULL DEFAULT '[]' -- JSON array of the outbound.pos it carries
);

-- host_log: everything the host is told about, in order.
CREATE TABLE host_log (
    pos       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT    NOT NULL, -- event, invite, knock, edu
    room_id   TEXT    NOT NULL DEFAULT '',
    event_nid INTEGER,          -- for event entries: the event, read at delivery
    payload   BLOB,             -- JSON for the other kinds
    ts        INTEGER NOT NULL
);

CREATE TABLE host_cursors (
    name TEXT PRIMARY KEY,
    pos  INTEGER NOT NULL
);
