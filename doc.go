// Package ferry is the root of Ferry, a federation-only Matrix homeserver:
// it speaks the Matrix server-server API and nothing else of Matrix, for
// room versions 10 (the long-term-stable version, MIMI I.1) and 12.
//
// This package holds no code, only repository-wide tests: the direction
// of imports between Ferry's packages (rooms at the bottom, cmd/ferry at
// the top, see imports_test.go) and that every package is documented.
// The binary is cmd/ferry; the protocol is in rooms and keys, the public
// plane in federation, the engine in homeserver, persistence in store and
// the host API in hostapi.
package ferry
