//go:build race

package fedtest

// raceEnabled: the race detector slows the servers about tenfold, so the
// bounded soak takes fewer steps under it.
const raceEnabled = true
