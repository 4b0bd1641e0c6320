-- Ferry schema, version 3: rooms joined with partial state.

-- partial_state_rooms lists the rooms this server joined through a
-- send_join answer that left out membership events (omit_members): their
-- state is partial until the full state is fetched and verified. A row is
-- written before the join is persisted and deleted in the same
-- transaction that installs the full state, so a restart resumes the
-- resync of every room still listed.
CREATE TABLE partial_state_rooms (
    room_id       TEXT    PRIMARY KEY,
    join_event_id TEXT    NOT NULL, -- our join; the full state is the state before it
    servers       TEXT    NOT NULL, -- JSON array: the resident first, then servers_in_room
    created_ts    INTEGER NOT NULL  -- ms since the epoch
) WITHOUT ROWID;
