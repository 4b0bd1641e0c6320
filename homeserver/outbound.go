package homeserver

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/ferry-matrix/ferry/store"
)

// Transport sends one transaction to another server: PUT /send/{txnID}
// with body exactly as given (canonical JSON, which is sent and signed as
// it is), returning the per-PDU errors of the answer
// (event ID to error, "" for accepted events). *federation.Client
// satisfies it. An error with a RetryAfter() time.Duration method (a 429
// answer) makes the sender wait at least that long.
type Transport interface {
	SendTransactionBody(ctx context.Context, destination, txnID string, body []byte) (map[string]string, error)
}

// Limits and defaults of outbound delivery.
const (
	// MaxTxnPDUs and MaxTxnEDUs bound one outbound transaction (spec).
	MaxTxnPDUs = 50
	MaxTxnEDUs = 100
	// DefaultBackoffBase is the wait after a destination's first failure;
	// it doubles with each consecutive failure up to DefaultBackoffMax.
	DefaultBackoffBase = 5 * time.Second
	DefaultBackoffMax  = 4 * time.Hour
	// DefaultCatchUpThreshold is the queue length above which a
	// destination recovering from an outage gets only the newest queued
	// event of each room, and pulls the gap with /get_missing_events.
	DefaultCatchUpThreshold = 1000
	// DefaultCatchUpWindow bounds the queued events read at once for a
	// catch-up; older ones are dropped first.
	DefaultCatchUpWindow = 10000
	// DefaultLinger is how long a sender waits for more items before
	// sending a transaction that is not full, so that a burst of events
	// goes in few transactions (and few database writes).
	DefaultLinger = 20 * time.Millisecond
	// DefaultMaxLinger bounds the lingering of a sender whose queue keeps
	// growing while it waits: a steady stream of events goes in fuller
	// transactions (fewer requests, signatures and database writes on
	// both sides), at the cost of at most this much latency.
	DefaultMaxLinger = 100 * time.Millisecond
	// DefaultPollInterval is how often the queues are scanned for work
	// nobody announced (events queued by code that does not call Notify).
	DefaultPollInterval = time.Minute
)

// Delivery sends the per-destination queues of the store to other
// servers: one goroutine per destination with pending work (none for idle
// ones), transactions of up to MaxTxnPDUs PDUs and MaxTxnEDUs EDUs, the
// same transaction ID and body retried until the destination answers,
// exponential backoff with jitter persisted in the store, and catch-up
// after a long outage. Fill the exported fields, then Start; Notify after
// committing queued items; Close on shutdown. The fields must not change
// after Start.
type Delivery struct {
	// ServerName is our server name, the origin of every transaction.
	// Required.
	ServerName string
	// Store holds the queues and the destinations' state. Required.
	Store *store.DB
	// Transport reaches other servers. Required.
	Transport Transport
	// Logger receives a line per failed attempt and per rejected PDU.
	Logger zerolog.Logger
	// ObserveAttempt, when set, is told of every attempt to send a
	// transaction: whether the destination answered it, and how many of
	// its PDUs the answer refused, for metrics. It must be fast and safe
	// for concurrent use.
	ObserveAttempt func(delivered bool, refusedPDUs int)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// After waits; time.After when nil. Tests make it return at once
	// and advance their clock.
	After func(time.Duration) <-chan time.Time
	// Jitter returns a number in [0, 1) that spreads backoff waits over
	// [interval/2, interval); math/rand when nil.
	Jitter func() float64
	// BackoffBase and BackoffMax shape the backoff; the Default constants
	// when zero.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// CatchUpThreshold and CatchUpWindow shape catch-up; the Default
	// constants when zero.
	CatchUpThreshold int
	CatchUpWindow    int
	// PollInterval is how often queues are scanned for unannounced work;
	// DefaultPollInterval when zero.
	PollInterval time.Duration
	// Linger is the wait for more items before sending a transaction
	// that is not full; DefaultLinger when zero, none when negative.
	// While items keep arriving the sender waits again, up to MaxLinger
	// in all (DefaultMaxLinger when zero).
	Linger    time.Duration
	MaxLinger time.Duration

	// canon keeps the canonical JSON of PDUs recently sent.
	canon canonicalPDUs

	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	senders map[string]*destSender
	stats   map[string]*destStats
	// reset holds destinations seen since their last failure: their
	// stored backoff no longer applies.
	reset map[string]bool
	// failing holds destinations whose last attempt failed, so that
	// seeing one without a running sender is remembered.
	failing map[string]bool
}

// destSender is the running sender of one destination.
type destSender struct {
	again bool          // work was announced while it ran
	seen  chan struct{} // the destination was seen: stop waiting
	// announced counts the announcements; the queue is searched for EDUs
	// only while EDUs may be queued, that is until a search found fewer
	// than a transaction holds with no announcement since (a search for
	// EDUs reads the destination's whole queue).
	announced, eduChecked uint64
	// attempting is the transaction being sent, recorded in the store or
	// not (a first attempt is not), "" between attempts.
	attempting string
}

// destStats counts what happened to a destination since Start.
type destStats struct {
	txns, pduErrors, catchUps, dropped int64
}

// DestinationHealth is the delivery state of one destination.
type DestinationHealth struct {
	Name         string
	LastSuccess  time.Time // zero: never
	LastFailure  time.Time // zero: never
	LastError    string
	Failures     int       // consecutive
	BackoffUntil time.Time // zero: not backing off
	Queued       int       // PDUs and EDUs waiting, those in flight included
	InFlightTxn  string    // the transaction being sent or retried, "" none
	Active       bool      // a sender is running
	// Since Start: transactions answered, PDUs the destination refused,
	// catch-ups and queued events dropped by them.
	TxnsSent, PDUErrors, CatchUps, Dropped int64
}

// Start begins delivery of whatever is queued, under ctx (the server's
// lifetime).
func (d *Delivery) Start(ctx context.Context) error {
	if d.ServerName == "" || d.Store == nil || d.Transport == nil {
		return errors.New("delivery: ServerName, Store and Transport are required")
	}
	known, err := d.Store.Destinations(ctx)
	if err != nil {
		return fmt.Errorf("delivery: %w", err)
	}
	d.mu.Lock()
	if d.ctx != nil {
		d.mu.Unlock()
		return errors.New("delivery: already started")
	}
	d.ctx, d.cancel = context.WithCancel(ctx)
	d.senders = make(map[string]*destSender)
	d.stats = make(map[string]*destStats)
	d.reset = make(map[string]bool)
	d.failing = make(map[string]bool)
	for _, st := range known {
		if st.Failures > 0 {
			d.failing[st.Name] = true
		}
	}
	d.wg.Add(1)
	d.mu.Unlock()
	go d.poll()
	return nil
}

// Close stops every sender and waits for them. A transaction cut short
// stays in flight in the store and is resent after the next Start.
func (d *Delivery) Close() {
	d.mu.Lock()
	cancel := d.cancel
	d.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	d.wg.Wait()
}

// Notify announces that items were queued for destinations; it starts
// their senders if they are not running. It never blocks.
func (d *Delivery) Notify(destinations ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ctx == nil || d.ctx.Err() != nil {
		return
	}
	for _, name := range destinations {
		if name == "" || name == d.ServerName {
			continue
		}
		if s := d.senders[name]; s != nil {
			s.again = true
			s.announced++
			continue
		}
		s := &destSender{seen: make(chan struct{}, 1), announced: 1}
		d.senders[name] = s
		d.wg.Add(1)
		go d.run(name, s)
	}
}

// DestinationSeen records a successful request from a destination: its
// backoff ends, and what is queued for it goes now.
func (d *Delivery) DestinationSeen(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.reset == nil {
		return
	}
	if s := d.senders[name]; s != nil {
		d.reset[name] = true
		select {
		case s.seen <- struct{}{}:
		default:
		}
		return
	}
	if d.failing[name] {
		// The next sender starts without the stored backoff.
		delete(d.failing, name)
		d.reset[name] = true
	}
}

// Health returns the delivery state of every destination contacted or
// with queued items, by name.
func (d *Delivery) Health(ctx context.Context) ([]DestinationHealth, error) {
	dests, err := d.Store.Destinations(ctx)
	if err != nil {
		return nil, fmt.Errorf("delivery health: %w", err)
	}
	pending, err := d.Store.PendingDestinations(ctx)
	if err != nil {
		return nil, fmt.Errorf("delivery health: %w", err)
	}
	known := make(map[string]bool, len(dests))
	for _, st := range dests {
		known[st.Name] = true
	}
	for _, name := range pending {
		if !known[name] {
			st, err := d.Store.Destination(ctx, name)
			if err != nil {
				return nil, fmt.Errorf("delivery health: %w", err)
			}
			dests = append(dests, st)
		}
	}
	slices.SortFunc(dests, func(a, b store.Destination) int { return cmp.Compare(a.Name, b.Name) })
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]DestinationHealth, 0, len(dests))
	for _, st := range dests {
		h := DestinationHealth{
			Name: st.Name, LastError: st.LastError, Failures: st.Failures,
			Queued: st.Pending, InFlightTxn: st.TxnID,
			LastSuccess: msTime(st.LastSuccessTS), LastFailure: msTime(st.LastFailureTS), BackoffUntil: msTime(st.BackoffUntil),
		}
		if d.reset[st.Name] {
			h.BackoffUntil = time.Time{}
		}
		sender, active := d.senders[st.Name]
		h.Active = active
		if h.InFlightTxn == "" && active {
			h.InFlightTxn = sender.attempting
		}
		if s := d.stats[st.Name]; s != nil {
			h.TxnsSent, h.PDUErrors, h.CatchUps, h.Dropped = s.txns, s.pduErrors, s.catchUps, s.dropped
		}
		out = append(out, h)
	}
	return out, nil
}

func msTime(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func (d *Delivery) now() time.Time {
	if d.Now == nil {
		return time.Now()
	}
	return d.Now()
}

func (d *Delivery) after(wait time.Duration) <-chan time.Time {
	if d.After == nil {
		return time.After(wait)
	}
	return d.After(wait)
}

// backoff returns the wait after the n-th consecutive failure (n >= 1).
func (d *Delivery) backoff(n int) time.Duration {
	base, limit := cmp.Or(d.BackoffBase, DefaultBackoffBase), cmp.Or(d.BackoffMax, DefaultBackoffMax)
	interval := base
	for i := 1; i < n && interval < limit; i++ {
		interval *= 2
	}
	interval = min(interval, limit)
	jitter := rand.Float64
	if d.Jitter != nil {
		jitter = d.Jitter
	}
	return interval/2 + time.Duration(jitter()*float64(interval/2))
}

func (d *Delivery) statsOf(name string) *destStats {
	s := d.stats[name]
	if s == nil {
		s = &destStats{}
		d.stats[name] = s
	}
	return s
}

// poll announces every destination with queued work at Start and then
// every PollInterval.
func (d *Delivery) poll() {
	defer d.wg.Done()
	interval := cmp.Or(d.PollInterval, DefaultPollInterval)
	for {
		dests, err := d.Store.PendingDestinations(d.ctx)
		if err != nil && d.ctx.Err() == nil {
			d.Logger.Error().Err(err).Msg("outbound queues not read")
		}
		d.Notify(dests...)
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// run is the sender of one destination: it sends until the queue is
// empty and then ends.
func (d *Delivery) run(name string, s *destSender) {
	defer d.wg.Done()
	log := d.Logger.With().Str("destination", name).Logger()
	ctx := d.ctx
	first := true
	var fails int   // consecutive failures counted for the backoff
	var outage bool // the destination failed since the queue was last short
	for ctx.Err() == nil {
		d.mu.Lock()
		s.again = false
		d.mu.Unlock()
		// The queue is counted only as far as the decisions below need:
		// short (under a transaction) or long (over the catch-up
		// threshold).
		st, err := d.Store.DestinationUpTo(ctx, name, max(cmp.Or(d.CatchUpThreshold, DefaultCatchUpThreshold), MaxTxnPDUs)+1)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			log.Error().Err(err).Msg("destination state not read")
			if !d.wait(ctx, s, name, cmp.Or(d.BackoffBase, DefaultBackoffBase)) {
				break
			}
			continue
		}
		if first {
			fails, outage, first = st.Failures, st.Failures > 0, false
		}
		if d.takeReset(name, false) {
			fails = 0
		}
		// A transaction is recorded in flight only once an attempt at it
		// failed: most go at the first attempt, and recording them would
		// be a database write per transaction for nothing. One forgotten
		// by a crash during its first attempt is built again, from the
		// same queue.
		recorded := st.TxnID != ""
		if recorded {
			// Sent as canonical JSON, as transactions are built; one
			// recorded by an older version may not be.
			if b, err := canonicalJSON(st.TxnBody); err == nil {
				st.TxnBody = b
			} else {
				log.Error().Err(err).Str("txn_id", st.TxnID).Msg("recorded transaction is not JSON; sent as it is")
			}
		}
		if !recorded {
			if st.Pending > 0 && st.Pending < MaxTxnPDUs && !d.gather(ctx, s, st.Pending) {
				break
			}
			built, err := d.buildTxn(ctx, name, s, &st, outage)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				log.Error().Err(err).Msg("transaction not built")
				if !d.wait(ctx, s, name, cmp.Or(d.BackoffBase, DefaultBackoffBase)) {
					break
				}
				continue
			}
			if !built {
				if d.finish(name, s) {
					return
				}
				continue
			}
			if st.Pending <= cmp.Or(d.CatchUpThreshold, DefaultCatchUpThreshold) {
				outage = false
			}
		}
		if until := msTime(st.BackoffUntil); !until.IsZero() && fails > 0 {
			if wait := until.Sub(d.now()); wait > 0 {
				if !d.wait(ctx, s, name, wait) {
					break
				}
				if d.takeReset(name, false) {
					fails = 0
				}
			}
		}
		d.mu.Lock()
		s.attempting = st.TxnID
		d.mu.Unlock()
		results, err := d.Transport.SendTransactionBody(ctx, name, st.TxnID, st.TxnBody)
		d.mu.Lock()
		s.attempting = ""
		d.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			fails++
			outage = true
			if d.ObserveAttempt != nil {
				d.ObserveAttempt(false, 0)
			}
			d.mu.Lock()
			d.failing[name] = true
			d.mu.Unlock()
			wait := d.backoff(fails)
			var asked interface{ RetryAfter() time.Duration }
			if errors.As(err, &asked) {
				wait = max(wait, min(asked.RetryAfter(), cmp.Or(d.BackoffMax, DefaultBackoffMax)))
			}
			log.Warn().Err(err).Str("txn_id", st.TxnID).Int("failures", fails).Dur("backoff", wait).Msg("transaction not delivered")
			if !recorded {
				// From now on the same transaction is retried, across
				// restarts too.
				if err := d.Store.BeginTxn(ctx, name, st.TxnID, st.TxnBody, st.TxnPositions); err != nil {
					if ctx.Err() != nil {
						break
					}
					log.Error().Err(err).Str("txn_id", st.TxnID).Msg("transaction in flight not recorded; its items go again in a new one")
				}
			}
			if err := d.Store.RecordFailure(ctx, name, d.now().Add(wait), err.Error()); err != nil {
				if ctx.Err() != nil {
					break
				}
				// The stored backoff did not move: wait here instead.
				log.Error().Err(err).Msg("failure not recorded")
				if !d.wait(ctx, s, name, wait) {
					break
				}
			}
			continue
		}
		complete := d.Store.CompleteTxn
		if !recorded {
			complete = func(ctx context.Context, name string) error { return d.Store.CompleteItems(ctx, name, st.TxnPositions) }
		}
		if err := complete(ctx, name); err != nil {
			if ctx.Err() == nil {
				log.Error().Err(err).Str("txn_id", st.TxnID).Msg("delivered transaction not recorded; it will be resent")
			}
			continue
		}
		fails = 0
		d.takeReset(name, true)
		var refused int64
		for id, msg := range results {
			if msg != "" {
				refused++
				log.Warn().Str(fieldEventID, id).Str("error", msg).Str("txn_id", st.TxnID).Msg("destination refused a PDU")
			}
		}
		d.mu.Lock()
		delete(d.failing, name)
		ds := d.statsOf(name)
		ds.txns++
		ds.pduErrors += refused
		d.mu.Unlock()
		if d.ObserveAttempt != nil {
			d.ObserveAttempt(true, int(refused))
		}
	}
	d.mu.Lock()
	delete(d.senders, name)
	d.mu.Unlock()
}

// gather lingers for more items before a transaction that is not full
// goes: a moment, again while items keep being announced, until about a
// transaction's worth is queued or MaxLinger has passed. False when the
// delivery stops.
func (d *Delivery) gather(ctx context.Context, s *destSender, pending int) bool {
	wait := cmp.Or(d.Linger, DefaultLinger)
	if wait < 0 {
		return true
	}
	deadline := time.Now().Add(max(wait, cmp.Or(d.MaxLinger, DefaultMaxLinger)))
	for {
		d.mu.Lock()
		before := s.announced
		d.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		d.mu.Lock()
		// An announcement is one committed batch, most often one event.
		arrived := int(s.announced - before)
		d.mu.Unlock()
		pending += arrived
		if arrived == 0 || pending >= MaxTxnPDUs || !time.Now().Add(wait).Before(deadline) {
			return true
		}
	}
}

// finish ends the sender of an empty queue, unless work was announced
// meanwhile.
func (d *Delivery) finish(name string, s *destSender) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s.again {
		return false
	}
	delete(d.senders, name)
	return true
}

// takeReset reports whether the destination was seen since the last
// check, and clears the mark when clear is set or it was seen.
func (d *Delivery) takeReset(name string, clear bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := d.reset[name]
	if seen || clear {
		delete(d.reset, name)
	}
	return seen
}

// wait waits for the duration, until the destination is seen or the
// delivery stops; false when it stops.
func (d *Delivery) wait(ctx context.Context, s *destSender, name string, wait time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-s.seen:
		d.mu.Lock()
		d.reset[name] = true
		d.mu.Unlock()
		return true
	case <-d.after(wait):
		return true
	}
}

// buildTxn takes the next transaction from the queue of name, filling
// st.TxnID, st.TxnBody and st.TxnPositions; false when nothing is
// queued. During an outage with a long queue it catches up: only the
// newest queued event of each room goes, the older ones leave the queue.
func (d *Delivery) buildTxn(ctx context.Context, name string, s *destSender, st *store.Destination, outage bool) (bool, error) {
	catchUp := outage && st.Pending > cmp.Or(d.CatchUpThreshold, DefaultCatchUpThreshold)
	maxPDUs := MaxTxnPDUs
	var trimmed int64
	if catchUp {
		// st.Pending is counted only up to past the threshold: trim to
		// the window whatever the queue's length (nothing goes when it
		// is shorter).
		window := cmp.Or(d.CatchUpWindow, DefaultCatchUpWindow)
		n, err := d.Store.TrimOutboundPDUs(ctx, name, window)
		if err != nil {
			return false, err
		}
		trimmed = n
		maxPDUs = window
	}
	d.mu.Lock()
	announced := s.announced
	maxEDUs := 0
	if announced != s.eduChecked {
		maxEDUs = MaxTxnEDUs
	}
	d.mu.Unlock()
	pdus, edus, err := d.Store.PeekOutbound(ctx, name, maxPDUs, maxEDUs)
	if err != nil {
		return false, err
	}
	if maxEDUs > 0 && len(edus) < maxEDUs {
		d.mu.Lock()
		s.eduChecked = announced
		d.mu.Unlock()
	}
	if len(pdus) == 0 && len(edus) == 0 {
		if st.Pending > 0 {
			d.Logger.Warn().Str("destination", name).Int("queued", st.Pending).Msg("queued items not readable; sender stops")
		}
		return false, nil
	}
	var positions []int64
	send := pdus
	if catchUp {
		var dropped int64
		positions, send, dropped = newestPerRoom(pdus)
		d.mu.Lock()
		ds := d.statsOf(name)
		ds.catchUps++
		ds.dropped += dropped + trimmed
		d.mu.Unlock()
		d.Logger.Info().Str("destination", name).Int("sent", len(send)).Int64("dropped", dropped+trimmed).Msg("catching up: sending the newest event of each room")
	} else {
		for _, p := range pdus {
			positions = append(positions, p.Pos)
		}
	}
	canonPDUs := make([]json.RawMessage, 0, len(send))
	for _, p := range send {
		b, err := d.canon.get(p.EventID, p.JSON)
		if err != nil {
			return false, fmt.Errorf("encode transaction: %w", err)
		}
		canonPDUs = append(canonPDUs, b)
	}
	canonEDUs := make([]json.RawMessage, 0, len(edus))
	for _, e := range edus {
		positions = append(positions, e.Pos)
		b, err := canonicalJSON(e.JSON)
		if err != nil {
			return false, fmt.Errorf("encode transaction: EDU: %w", err)
		}
		canonEDUs = append(canonEDUs, b)
	}
	now := d.now()
	raw, err := transactionBody(d.ServerName, now.UnixMilli(), canonPDUs, canonEDUs)
	if err != nil {
		return false, fmt.Errorf("encode transaction: %w", err)
	}
	// Queue positions are never reused, so the first one makes the ID
	// unique; the time keeps it unique across a database started afresh.
	txnID := fmt.Sprintf("%d.%d", now.UnixMilli(), slices.Min(positions))
	st.TxnID, st.TxnBody, st.TxnPositions = txnID, raw, positions
	return true, nil
}

// newestPerRoom picks, from queued PDUs in queue order, the newest of each
// room, for at most MaxTxnPDUs rooms (those with the newest events). It
// returns the positions the transaction settles (every queued PDU of the
// chosen rooms), the PDUs to send and how many are dropped.
func newestPerRoom(pdus []store.OutboundPDU) ([]int64, []store.OutboundPDU, int64) {
	type room struct {
		newest    store.OutboundPDU
		positions []int64
	}
	byRoom := make(map[string]*room)
	var order []*room
	for _, p := range pdus {
		var head struct {
			RoomID string `json:"room_id"`
		}
		if json.Unmarshal(p.JSON, &head) != nil {
			head.RoomID = ""
		}
		r := byRoom[head.RoomID]
		if r == nil {
			r = &room{}
			byRoom[head.RoomID] = r
			order = append(order, r)
		}
		r.newest = p
		r.positions = append(r.positions, p.Pos)
	}
	slices.SortFunc(order, func(a, b *room) int { return cmp.Compare(b.newest.Pos, a.newest.Pos) })
	if len(order) > MaxTxnPDUs {
		order = order[:MaxTxnPDUs]
	}
	var positions []int64
	var out []store.OutboundPDU
	for _, r := range order {
		positions = append(positions, r.positions...)
		out = append(out, r.newest)
	}
	return positions, out, int64(len(positions) - len(out))
}
