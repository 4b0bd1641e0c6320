//go:build !(linux && (amd64 || arm64))

package store

// installWALWrites leaves SQLite's system calls as they are: walwrites.go
// knows their signatures on 64-bit Linux only.
func installWALWrites() error { return nil }
