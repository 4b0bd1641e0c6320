// Package hostapi is the host plane: the private HTTP API through which
// the host product (the vendor's own messaging service, a test harness)
// acts as its local users and receives everything that arrives from
// federation.
//
// It has its own listener, loopback or a unix socket by default, and
// requires a bearer token (compared in constant time). Routes live under
// /_ferry/v1/: users, rooms (create, join, invite, leave, kick, ban, send,
// state, redact, timeline), aliases, destination health, and the event
// stream, served as long-poll or server-sent events from the persisted host
// event log, plus webhook delivery from the same log. Stream positions are
// durable: the host resumes from the last token it processed and reads
// every later item once, in order, across restarts. The webhook deliverer
// keeps its own persisted cursor, advanced only after the host
// acknowledged a batch, so webhooks are delivered at least once. Errors
// use the Matrix shape {"errcode", "error"}; docs/host-api.md describes
// every route.
//
// It calls the engine through an interface it defines and reads cursors
// from store; it never imports federation, so the public and private
// planes stay apart.
package hostapi
