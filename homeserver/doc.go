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
package homeserver
