// Package homeserver is the engine both planes share: the inbound PDU
// pipeline (signature and hash checks, fetching what is missing, the three
// authorization checks, state resolution, persisting in one transaction),
// the join, leave, invite and knock flows, creating rooms and sending local
// events, per-room serialization, and the writer of the host event log.
//
// It depends on rooms, keys and store. It reaches other servers only
// through the small interfaces it defines (Remote for requests, Sender for
// outbound delivery), which package federation satisfies; in turn it
// satisfies federation's RoomHandler. cmd/ferry builds both in order, so
// neither package imports the other.
//
// Using the engine: fill an Engine's fields (server name, signing key,
// store, key source, optionally a Remote for fetching missing events) and
// hand it to federation.Server as its RoomHandler. ReceivePDUs runs the
// spec's checks on received PDUs in order (room and version, format,
// signatures, content hash, missing prev events, auth against the auth
// events, against the state before, against the current state) and
// persists each event, the state before it, the forward extremities, the
// current state and the host log entry in one database transaction.
// CreateRoom and SendEvent act for local users. The read methods (Event,
// StateIDs, State, EventAuth, Backfill, MissingEvents) answer the
// federation history endpoints for servers with a joined member.
//
// Host is the host plane's side of the engine: what the host product does
// as its local users (registered users only, unless AutoRegisterUsers),
// each operation checked and refused with an *Error that names the Matrix
// errcode, and the reads it needs: room summaries, current state, the
// timeline paged with opaque tokens (backfilling history from other
// servers with BackfillRoom when paging backwards runs out of it) and the
// host event stream. Sends under a transaction ID are recorded in the
// transaction that persists the event, so a retry never makes a second
// event.
//
// The engine keeps, per room, its forward extremities and current state in
// memory, changed only under the room's lock after a commit. Every write
// to a room must therefore go through the engine.
package homeserver
