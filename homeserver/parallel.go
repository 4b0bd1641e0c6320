package homeserver

import (
	"runtime"
	"sync"
)

// parallelEach calls f(i) for every i in [0, n) on every CPU and returns
// when all calls have. f must only write state owned by index i.
func parallelEach(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := 0
	// Indexes are handed out in small blocks: one channel operation per
	// event would cost as much as parsing a small one.
	const block = 16
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				start := next
				next += block
				mu.Unlock()
				if start >= n {
					return
				}
				for i := start; i < min(start+block, n); i++ {
					f(i)
				}
			}
		}()
	}
	wg.Wait()
}
