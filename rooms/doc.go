// Package rooms is the Matrix protocol as pure functions: identifiers,
// canonical JSON, JSON signing, the event (PDU) type, the room-version table,
// hashes, redaction, authorization rules and state resolution.
//
// Nothing here does I/O, reads the clock or logs: every function is a
// deterministic function of its arguments, so the same inputs give every
// Ferry server the same verdict. Data the algorithms need (signing keys,
// events not at hand) comes in through small interfaces the caller fills.
package rooms
