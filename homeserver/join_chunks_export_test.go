package homeserver

// SetJoinChunk makes a join read and write its answer n events at a
// time until the returned function restores the size.
func SetJoinChunk(n int) (restore func()) {
	old := joinChunk
	joinChunk = n
	return func() { joinChunk = old }
}
