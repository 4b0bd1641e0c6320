package federation

import (
	"fmt"
	"net/http"
	"sync"
)

const (
	// DefaultMaxRequestBodyBytes bounds inbound request bodies: a
	// transaction of 50 PDUs of 64 KiB (3.2 MiB) plus 100 EDUs fits with
	// room (federation.max_request_body_bytes).
	DefaultMaxRequestBodyBytes = 8 << 20
	// DefaultMaxConcurrentPerOrigin bounds the requests one origin server
	// may have in progress at once; more are answered 429.
	DefaultMaxConcurrentPerOrigin = 32
	// maxConcurrentNotaryPerClient bounds the notary queries one client
	// address may have in progress.
	maxConcurrentNotaryPerClient = 4
	// retryAfterMS is what a 429 asks the origin to wait.
	retryAfterMS = 1000
)

func (s *Server) maxRequestBody() int64 {
	if s.MaxRequestBodyBytes > 0 {
		return s.MaxRequestBodyBytes
	}
	return DefaultMaxRequestBodyBytes
}

// originLimiter counts requests in progress per origin.
type originLimiter struct {
	max int

	mu       sync.Mutex
	inflight map[string]int
}

// limiter returns the server's per-origin limiter, creating it on first
// use with MaxConcurrentPerOrigin.
func (s *Server) limiter() *originLimiter {
	s.limiterOnce.Do(func() {
		n := s.MaxConcurrentPerOrigin
		if n <= 0 {
			n = DefaultMaxConcurrentPerOrigin
		}
		s.originLimits = &originLimiter{max: n, inflight: map[string]int{}}
	})
	return s.originLimits
}

// notaryLimiter returns the per-client-address limiter of the notary
// endpoints.
func (s *Server) notaryLimiter() *originLimiter {
	s.notaryLimiterOnce.Do(func() {
		s.notaryLimits = &originLimiter{max: maxConcurrentNotaryPerClient, inflight: map[string]int{}}
	})
	return s.notaryLimits
}

// acquire takes one of origin's slots, or answers 429 M_LIMIT_EXCEEDED
// with retry_after_ms when all are taken. release gives the slot back.
func (l *originLimiter) acquire(origin string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inflight[origin] >= l.max {
		return nil, &MatrixError{
			Status:  http.StatusTooManyRequests,
			Code:    "M_LIMIT_EXCEEDED",
			Message: fmt.Sprintf("%s has %d requests in progress, the most this server allows", origin, l.max),
			Extra:   map[string]any{"retry_after_ms": retryAfterMS},
		}
	}
	l.inflight[origin]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.inflight[origin] <= 1 {
				delete(l.inflight, origin)
			} else {
				l.inflight[origin]--
			}
		})
	}, nil
}
