// Package keys manages server signing keys: our own ed25519 keys (in the key
// file format Synapse uses), the server key document we publish, the rules
// for when a key is valid, and the key ring that caches other servers' keys
// fetched through a Fetcher.
//
// JSON signing itself is a pure function and lives in package rooms; this
// package decides which keys to sign and verify with.
package keys
