-- Ferry schema, version 2: what the host API needs.

-- local_txns de-duplicates the host's sends: one event per (sender,
-- txn_id). A row is written in the same transaction as its event.
CREATE TABLE local_txns (
    sender   TEXT    NOT NULL,
    txn_id   TEXT    NOT NULL,
    event_id TEXT    NOT NULL,
    room_id  TEXT    NOT NULL,
    ts       INTEGER NOT NULL, -- when it was sent, ms since the epoch
    PRIMARY KEY (sender, txn_id)
) WITHOUT ROWID;

-- The timeline in topological order (depth, then arrival), for paging.
CREATE INDEX events_by_room_depth ON events (room_nid, depth, event_nid);
