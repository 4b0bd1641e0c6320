package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
)

// sendConfig is what `ferry-load send` is asked to do.
type sendConfig struct {
	Target      string // server name of the homeserver measured, host:port
	RoomID      string
	Origins     int    // remote servers this process acts as
	PDUs        int    // messages to send, over all origins
	Concurrency int    // transactions in flight at once, over all origins
	TxnSize     int    // PDUs per transaction, at most 50
	Shape       string // "line" or "fork"
	Bind        string
	Insecure    bool
	BodyBytes   int // padding added to each message body

	HostAPI, HostToken, Creator, RoomVersion string
	CreateRoom                               bool
}

// sendReport is the outcome of a run.
type sendReport struct {
	Target       string  `json:"target"`
	RoomID       string  `json:"room_id"`
	RoomVersion  string  `json:"room_version"`
	Origins      int     `json:"origins"`
	Concurrency  int     `json:"concurrency"`
	Shape        string  `json:"shape"`
	PDUs         int     `json:"pdus"`
	Transactions int     `json:"transactions"`
	JoinSeconds  float64 `json:"join_seconds"`
	SignSeconds  float64 `json:"sign_seconds"`
	SendSeconds  float64 `json:"send_seconds"`
	// SendCPUSeconds is the CPU time (user and system) this process used
	// while sending: the load generator's own, and the target's too when
	// it runs in the same process (BenchmarkSendIngest). 0 where the
	// platform does not tell (it is read from /proc).
	SendCPUSeconds float64 `json:"send_cpu_seconds,omitempty"`
	Accepted       int     `json:"accepted"`
	PDUsPerSec     float64 `json:"accepted_pdus_per_second"`
	PDUErrors      int     `json:"pdu_errors"`
	// ErrorSamples counts per-PDU and transaction errors by message.
	ErrorSamples map[string]int `json:"error_samples,omitempty"`
	TxnOK        int            `json:"transactions_ok"`
	TxnFailed    int            `json:"transactions_failed"`
	TxnRetried   int            `json:"transactions_retried"`
	LatencyMS    latencies      `json:"latency_ms"`
	// ReceivedFromTarget counts the PDUs the target sent our servers
	// (events it originated or accepted by send_join) until the sending
	// ended.
	ReceivedFromTarget int64 `json:"pdus_received_from_target"`
	// EventIDs are the PDUs sent, for callers that check the target.
	EventIDs []string `json:"-"`
}

// latencies summarises the answered transactions' round trips.
type latencies struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func summarise(ds []time.Duration) latencies {
	if len(ds) == 0 {
		return latencies{}
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		i := int(q*float64(len(ds))+0.5) - 1
		i = min(max(i, 0), len(ds)-1)
		return float64(ds[i].Microseconds()) / 1000
	}
	return latencies{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: float64(ds[len(ds)-1].Microseconds()) / 1000}
}

// origin is one remote server this process acts as, joined to the room.
type origin struct {
	srv    *fakeServer
	user   string
	join   *rooms.Event
	lanes  [][]*rooms.Event // chains of messages, each starting at the join
	events sync.Map         // event ID -> *rooms.Event, for /event and gap filling
	// received counts the PDUs the target sent us (events it sends to
	// the servers in the room, such as joins it accepted by send_join).
	received atomic.Int64
	// stateAfterJoin and authChain are the room state after our join (the
	// send_join answer's state plus the join) and its auth chain: the
	// state before each of our messages, as messages change no state
	// (changes by others after our join are not tracked).
	stateAfterJoin, authChain []string
}

// txn is a pre-signed transaction.
type txn struct {
	uri  string
	body []byte
	auth string
	ids  []string
}

func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ferry-load send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg sendConfig
	fs.StringVar(&cfg.Target, "target", "", "server name of the homeserver to measure, host:port (required)")
	fs.StringVar(&cfg.RoomID, "room", "", "room to join and send into (public, or otherwise open to the origins' users)")
	fs.IntVar(&cfg.Origins, "servers", 1, "remote servers to act as (each joins one user and sends its own share)")
	fs.IntVar(&cfg.PDUs, "pdus", 1000, "messages to send, over all servers")
	fs.IntVar(&cfg.Concurrency, "concurrency", 4, "transactions in flight at once, over all servers")
	fs.IntVar(&cfg.TxnSize, "txn-size", 50, "PDUs per transaction (1 to 50)")
	fs.StringVar(&cfg.Shape, "shape", "line", "prev_events shape: line (one chain per server; with several transactions of a server in flight the target may see gaps and fetch them) or fork (one chain per concurrent sender, all starting at the server's join)")
	fs.StringVar(&cfg.Bind, "bind", "127.0.0.1", "host our servers' listeners bind to (server names are host:port)")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "skip TLS certificate verification (self-signed targets)")
	fs.IntVar(&cfg.BodyBytes, "body-bytes", 0, "padding added to each message body")
	fs.StringVar(&cfg.HostAPI, "host-api", "", "Ferry host API base URL (http://host:port), to create the room with --create-room")
	fs.StringVar(&cfg.HostToken, "host-token", os.Getenv("FERRY_HOST_TOKEN"), "host API bearer token (default $FERRY_HOST_TOKEN)")
	fs.BoolVar(&cfg.CreateRoom, "create-room", false, "create a public room on the target through its host API first")
	fs.StringVar(&cfg.Creator, "creator", "", "local user of the target that creates the room (default @ferry-load:<target>)")
	fs.StringVar(&cfg.RoomVersion, "room-version", "", "version of the created room (default: the target's)")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rep, err := sendLoad(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "ferry-load send: %v\n", err)
		return 1
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		printSendReport(stdout, rep)
	}
	if rep.Accepted < rep.PDUs {
		return 3
	}
	return 0
}

func printSendReport(w io.Writer, r *sendReport) {
	fmt.Fprintf(w, "target %s, room %s (version %s)\n", r.Target, r.RoomID, r.RoomVersion)
	fmt.Fprintf(w, "%d servers joined in %.2f s; %d PDUs pre-signed in %.2f s\n", r.Origins, r.JoinSeconds, r.PDUs, r.SignSeconds)
	fmt.Fprintf(w, "sent %d transactions (shape %s, concurrency %d) in %.2f s\n", r.Transactions, r.Shape, r.Concurrency, r.SendSeconds)
	if r.SendCPUSeconds > 0 {
		fmt.Fprintf(w, "this process used %.2f CPU-s meanwhile (the load generator's own work)\n", r.SendCPUSeconds)
	}
	fmt.Fprintf(w, "accepted %d of %d PDUs: %.0f PDUs/s\n", r.Accepted, r.PDUs, r.PDUsPerSec)
	fmt.Fprintf(w, "transactions: %d ok, %d failed, %d retried after 429\n", r.TxnOK, r.TxnFailed, r.TxnRetried)
	fmt.Fprintf(w, "latency (ms): p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n", r.LatencyMS.P50, r.LatencyMS.P90, r.LatencyMS.P99, r.LatencyMS.Max)
	fmt.Fprintf(w, "PDUs the target sent our servers meanwhile: %d\n", r.ReceivedFromTarget)
	if len(r.ErrorSamples) > 0 {
		fmt.Fprintf(w, "errors (%d PDUs):\n", r.PDUErrors)
		msgs := make([]string, 0, len(r.ErrorSamples))
		for m := range r.ErrorSamples {
			msgs = append(msgs, m)
		}
		sort.Slice(msgs, func(i, j int) bool { return r.ErrorSamples[msgs[i]] > r.ErrorSamples[msgs[j]] })
		for _, m := range msgs[:min(len(msgs), 10)] {
			fmt.Fprintf(w, "  %6d  %s\n", r.ErrorSamples[m], m)
		}
	}
}

// sendLoad runs one measurement: set up (room, servers, joins, signing),
// then send every transaction and collect the answers.
func sendLoad(ctx context.Context, cfg sendConfig, logw io.Writer) (*sendReport, error) {
	switch {
	case cfg.Target == "":
		return nil, errors.New("--target is required")
	case cfg.Origins < 1 || cfg.Concurrency < 1 || cfg.PDUs < 1:
		return nil, errors.New("--servers, --concurrency and --pdus must be at least 1")
	case cfg.TxnSize < 1 || cfg.TxnSize > 50:
		return nil, errors.New("--txn-size must be 1 to 50 (the spec's limit)")
	case cfg.Concurrency < cfg.Origins:
		return nil, errors.New("--concurrency must be at least --servers (each server needs a sender)")
	case cfg.Shape != "line" && cfg.Shape != "fork":
		return nil, fmt.Errorf("--shape must be line or fork, not %q", cfg.Shape)
	}
	if cfg.CreateRoom {
		if cfg.HostAPI == "" {
			return nil, errors.New("--create-room needs --host-api")
		}
		if cfg.Creator == "" {
			cfg.Creator = "@ferry-load:" + cfg.Target
		}
		h := newHostAPI(cfg.HostAPI, cfg.HostToken)
		if err := h.putUser(ctx, cfg.Creator); err != nil {
			return nil, err
		}
		roomID, err := h.createPublicRoom(ctx, cfg.Creator, cfg.RoomVersion)
		if err != nil {
			return nil, err
		}
		cfg.RoomID = roomID
		fmt.Fprintf(logw, "created room %s on %s\n", roomID, cfg.Target)
	}
	if cfg.RoomID == "" {
		return nil, errors.New("--room is required (or --create-room with --host-api)")
	}
	host, _, _ := strings.Cut(cfg.Bind, ":")
	cert, err := selfSignedCert(host)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	hc := httpsClient(cfg.Insecure, cfg.Concurrency)
	peers := newPeerKeys(hc)
	origins := make([]*origin, cfg.Origins)
	for i := range origins {
		s, err := startFakeServer(cfg.Bind, cert)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		o := &origin{srv: s, user: "@load" + fmt.Sprint(i) + ":" + s.Name}
		origins[i] = o
		o.routes(peers)
	}
	rep := &sendReport{Target: cfg.Target, RoomID: cfg.RoomID, Origins: cfg.Origins, Concurrency: cfg.Concurrency, Shape: cfg.Shape, PDUs: cfg.PDUs}

	start := time.Now()
	var v rooms.Version
	var create, powerLevels string
	for _, o := range origins {
		var err error
		v, create, powerLevels, err = o.joinRoom(ctx, hc, cfg.Target, cfg.RoomID)
		if err != nil {
			return nil, fmt.Errorf("%s joins %s: %w", o.srv.Name, cfg.RoomID, err)
		}
	}
	rep.RoomVersion = v.ID
	rep.JoinSeconds = time.Since(start).Seconds()

	start = time.Now()
	// Workers are spread over the origins; in the fork shape each worker
	// sends a chain of its own.
	workersOf := make([]int, cfg.Origins)
	for w := range cfg.Concurrency {
		workersOf[w%cfg.Origins]++
	}
	queues := make([][]chan txn, cfg.Origins) // origin -> lane -> its transactions in order
	var allTxns int
	pad := strings.Repeat("x", cfg.BodyBytes)
	for i, o := range origins {
		share := cfg.PDUs / cfg.Origins
		if i < cfg.PDUs%cfg.Origins {
			share++
		}
		lanes := 1
		if cfg.Shape == "fork" {
			lanes = max(1, workersOf[i])
		}
		if err := o.presign(v, cfg.RoomID, create, powerLevels, share, lanes, pad); err != nil {
			return nil, err
		}
		for _, lane := range o.lanes {
			txns, err := o.transactions(lane, cfg.Target, cfg.TxnSize, start)
			if err != nil {
				return nil, err
			}
			q := make(chan txn, len(txns))
			for _, t := range txns {
				q <- t
				rep.EventIDs = append(rep.EventIDs, t.ids...)
			}
			close(q)
			queues[i] = append(queues[i], q)
			allTxns += len(txns)
		}
	}
	rep.Transactions = allTxns
	rep.SignSeconds = time.Since(start).Seconds()

	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      = map[string]int{}
		wg        sync.WaitGroup
	)
	record := func(d time.Duration, accepted int, pduErrs map[string]string, txnErr error, retried int) {
		mu.Lock()
		defer mu.Unlock()
		rep.TxnRetried += retried
		if txnErr != nil {
			rep.TxnFailed++
			errs["transaction: "+txnErr.Error()]++
			return
		}
		rep.TxnOK++
		latencies = append(latencies, d)
		rep.Accepted += accepted
		for _, e := range pduErrs {
			rep.PDUErrors++
			errs[e]++
		}
	}
	sendStart := time.Now()
	cpuStart, cpuErr := processCPU(os.Getpid())
	for i := range origins {
		for w := range workersOf[i] {
			q := queues[i][w%len(queues[i])]
			wg.Add(1)
			go func() {
				defer wg.Done()
				for t := range q {
					d, accepted, pduErrs, retried, err := sendTxn(ctx, hc, cfg.Target, t)
					record(d, accepted, pduErrs, err, retried)
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(sendStart)
	if cpuEnd, err := processCPU(os.Getpid()); err == nil && cpuErr == nil {
		rep.SendCPUSeconds = cpuEnd - cpuStart
	}
	rep.SendSeconds = elapsed.Seconds()
	rep.PDUsPerSec = float64(rep.Accepted) / elapsed.Seconds()
	rep.LatencyMS = summarise(latencies)
	for _, o := range origins {
		rep.ReceivedFromTarget += o.received.Load()
	}
	if len(errs) > 0 {
		rep.ErrorSamples = errs
	}
	return rep, nil
}

// sendTxn sends one transaction, waiting and resending the same one when
// the target answers 429, and reads the per-PDU results.
func sendTxn(ctx context.Context, hc *http.Client, target string, t txn) (time.Duration, int, map[string]string, int, error) {
	retried := 0
	for {
		start := time.Now()
		raw, err := doSigned(ctx, hc, target, http.MethodPut, t.uri, t.body, t.auth)
		d := time.Since(start)
		var me *matrixError
		if errors.As(err, &me) && me.Status == http.StatusTooManyRequests && retried < 20 {
			retried++
			select {
			case <-time.After(200 * time.Millisecond):
				continue
			case <-ctx.Done():
				return d, 0, nil, retried, ctx.Err()
			}
		}
		if err != nil {
			return d, 0, nil, retried, err
		}
		var answer struct {
			PDUs map[string]struct {
				Error string `json:"error"`
			} `json:"pdus"`
		}
		if err := json.Unmarshal(raw, &answer); err != nil {
			return d, 0, nil, retried, fmt.Errorf("answer: %w", err)
		}
		errs := map[string]string{}
		accepted := 0
		for _, id := range t.ids {
			r, ok := answer.PDUs[id]
			switch {
			case !ok:
				errs[id] = "no result for the PDU in the answer"
			case r.Error != "":
				errs[id] = r.Error
			default:
				accepted++
			}
		}
		return d, accepted, errs, retried, nil
	}
}

// routes serves the origin's own events, which the target may ask for
// when it sees a gap (transactions of a chain arriving out of order).
func (o *origin) routes(peers *peerKeys) {
	o.srv.Mux.HandleFunc("GET /_matrix/federation/v1/event/{eventId}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := peers.authenticate(w, r, o.srv.Name); !ok {
			return
		}
		ev, ok := o.events.Load(r.PathValue("eventId"))
		if !ok {
			matrixErr(w, http.StatusNotFound, "M_NOT_FOUND", "unknown event")
			return
		}
		writeTransaction(w, o.srv.Name, []*rooms.Event{ev.(*rooms.Event)})
	})
	// The target sends the events it originates or accepts through
	// send_join to every server in the room, ours included: they are
	// acknowledged (and counted) so that its delivery does not back off
	// and retry during the measurement.
	o.srv.Mux.HandleFunc("PUT /_matrix/federation/v1/send/{txnId}", func(w http.ResponseWriter, r *http.Request) {
		in, ok := peers.authenticate(w, r, o.srv.Name)
		if !ok {
			return
		}
		var body struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		if err := json.Unmarshal(in.Body, &body); err != nil {
			matrixErr(w, http.StatusBadRequest, "M_BAD_JSON", "transaction: %v", err)
			return
		}
		o.received.Add(int64(len(body.PDUs)))
		writeJSON(w, http.StatusOK, map[string]any{"pdus": map[string]any{}})
	})
	o.srv.Mux.HandleFunc("GET /_matrix/federation/v1/state_ids/{roomId}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := peers.authenticate(w, r, o.srv.Name); !ok {
			return
		}
		at := r.URL.Query().Get("event_id")
		ev, ok := o.events.Load(at)
		if !ok || ev.(*rooms.Event).Type() != "m.room.message" || ev.(*rooms.Event).Sender() != o.user {
			matrixErr(w, http.StatusNotFound, "M_NOT_FOUND", "this server only answers for the messages it sent")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"pdu_ids": o.stateAfterJoin, "auth_chain_ids": o.authChain})
	})
	o.srv.Mux.HandleFunc("POST /_matrix/federation/v1/get_missing_events/{roomId}", func(w http.ResponseWriter, r *http.Request) {
		in, ok := peers.authenticate(w, r, o.srv.Name)
		if !ok {
			return
		}
		var body struct {
			Earliest []string `json:"earliest_events"`
			Latest   []string `json:"latest_events"`
			Limit    int      `json:"limit"`
		}
		if err := json.Unmarshal(in.Body, &body); err != nil {
			matrixErr(w, http.StatusBadRequest, "M_BAD_JSON", "body: %v", err)
			return
		}
		if body.Limit <= 0 {
			body.Limit = 10
		}
		stop := map[string]bool{}
		for _, id := range body.Earliest {
			stop[id] = true
		}
		// Walk back from the latest events through our own chains.
		var out []*rooms.Event
		queue := []string{}
		for _, id := range body.Latest {
			if ev, ok := o.events.Load(id); ok {
				queue = append(queue, ev.(*rooms.Event).PrevEvents()...)
			}
		}
		for len(queue) > 0 && len(out) < min(body.Limit, 100) {
			id := queue[0]
			queue = queue[1:]
			if stop[id] {
				continue
			}
			stop[id] = true
			ev, ok := o.events.Load(id)
			if !ok {
				continue
			}
			out = append(out, ev.(*rooms.Event))
			queue = append(queue, ev.(*rooms.Event).PrevEvents()...)
		}
		slices.Reverse(out)
		var b strings.Builder
		b.WriteString(`{"events":[`)
		for i, ev := range out {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(ev.JSON())
		}
		b.WriteString("]}")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, b.String())
	})
}

// joinRoom joins the origin's user through the target: make_join with the
// versions we build events for, sign, send_join v2. It returns the room
// version and the IDs of the create and power-levels events of the state.
func (o *origin) joinRoom(ctx context.Context, hc *http.Client, target, roomID string) (rooms.Version, string, string, error) {
	path := "/_matrix/federation/v1/make_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(o.user)
	raw, err := fedRequest(ctx, hc, o.srv.Signer, target, http.MethodGet, path, url.Values{"ver": rooms.SupportedVersionIDs()}, nil)
	if err != nil {
		return rooms.Version{}, "", "", fmt.Errorf("make_join: %w", err)
	}
	var answer struct {
		RoomVersion string          `json:"room_version"`
		Event       json.RawMessage `json:"event"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return rooms.Version{}, "", "", fmt.Errorf("make_join answer: %w", err)
	}
	v, err := rooms.LookupVersion(answer.RoomVersion)
	if err != nil {
		return rooms.Version{}, "", "", fmt.Errorf("make_join: %w", err)
	}
	t, err := joinTemplate(answer.Event, roomID, o.user)
	if err != nil {
		return rooms.Version{}, "", "", err
	}
	t.OriginServerTS = time.Now().UnixMilli()
	join, err := rooms.BuildEvent(v, t, o.srv.Signer)
	if err != nil {
		return rooms.Version{}, "", "", fmt.Errorf("sign the join: %w", err)
	}
	path = "/_matrix/federation/v2/send_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(join.EventID())
	raw, err = fedRequest(ctx, hc, o.srv.Signer, target, http.MethodPut, path, nil, join.JSON())
	if err != nil {
		return rooms.Version{}, "", "", fmt.Errorf("send_join: %w", err)
	}
	var joined struct {
		State     []json.RawMessage `json:"state"`
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	if err := json.Unmarshal(raw, &joined); err != nil {
		return rooms.Version{}, "", "", fmt.Errorf("send_join answer: %w", err)
	}
	var create, pl string
	for _, r := range joined.State {
		ev, err := rooms.ParseEvent(v, r)
		if err != nil {
			return rooms.Version{}, "", "", fmt.Errorf("send_join answer: state: %w", err)
		}
		k, _ := rooms.StateTupleOf(ev)
		switch k {
		case rooms.CreateTuple:
			create = ev.EventID()
		case rooms.StateTuple{Type: "m.room.power_levels"}:
			pl = ev.EventID()
		}
		if k != (rooms.StateTuple{Type: "m.room.member", StateKey: o.user}) {
			o.stateAfterJoin = append(o.stateAfterJoin, ev.EventID())
		}
		o.events.Store(ev.EventID(), ev)
	}
	for _, r := range joined.AuthChain {
		ev, err := rooms.ParseEvent(v, r)
		if err != nil {
			return rooms.Version{}, "", "", fmt.Errorf("send_join answer: auth chain: %w", err)
		}
		o.authChain = append(o.authChain, ev.EventID())
		o.events.Store(ev.EventID(), ev)
	}
	if create == "" {
		return rooms.Version{}, "", "", errors.New("send_join answer: the state has no create event")
	}
	o.join = join
	o.stateAfterJoin = append(o.stateAfterJoin, join.EventID())
	o.events.Store(join.EventID(), join)
	return v, create, pl, nil
}

// joinTemplate reads a make_join template into an event template, after
// checking it is the join of user in roomID.
func joinTemplate(raw []byte, roomID, user string) (rooms.EventTemplate, error) {
	var t struct {
		Type       string         `json:"type"`
		RoomID     string         `json:"room_id"`
		Sender     string         `json:"sender"`
		StateKey   *string        `json:"state_key"`
		Content    map[string]any `json:"content"`
		PrevEvents []string       `json:"prev_events"`
		AuthEvents []string       `json:"auth_events"`
		Depth      int64          `json:"depth"`
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return rooms.EventTemplate{}, fmt.Errorf("make_join template: %w", err)
	}
	if t.Type != "m.room.member" || t.RoomID != roomID || t.Sender != user || t.StateKey == nil || *t.StateKey != user || t.Content["membership"] != "join" {
		return rooms.EventTemplate{}, fmt.Errorf("make_join template is not the join of %s to %s: %s", user, roomID, raw)
	}
	return rooms.EventTemplate{
		Type: t.Type, StateKey: t.StateKey, Sender: user, RoomID: roomID,
		Content: t.Content, PrevEvents: t.PrevEvents, AuthEvents: t.AuthEvents, Depth: t.Depth,
	}, nil
}

// presign builds and signs n messages from the origin's user in lanes
// chains, each starting at the user's join.
func (o *origin) presign(v rooms.Version, roomID, create, powerLevels string, n, lanes int, pad string) error {
	var auth []string
	if v.CreateInAuthEvents {
		auth = append(auth, create)
	}
	if powerLevels != "" {
		auth = append(auth, powerLevels)
	}
	auth = append(auth, o.join.EventID())
	ts := time.Now().UnixMilli()
	drafts := make([]draft, 0, n)
	laneOf := make([]int, 0, n)
	heads := make([]string, lanes)
	depths := make([]int64, lanes)
	for l := range lanes {
		heads[l], depths[l] = o.join.EventID(), o.join.Depth()
	}
	for i := range n {
		l := i % lanes
		depths[l]++
		body := fmt.Sprintf("load message %d from %s%s", i, o.srv.Name, pad)
		d, err := newDraft(v, rooms.EventTemplate{
			Type: "m.room.message", Sender: o.user, RoomID: roomID,
			Content:    map[string]any{"msgtype": "m.text", "body": body},
			PrevEvents: []string{heads[l]}, AuthEvents: auth, Depth: depths[l], OriginServerTS: ts + int64(i),
		}, o.srv.Signer)
		if err != nil {
			return err
		}
		heads[l] = d.id
		drafts = append(drafts, d)
		laneOf = append(laneOf, l)
	}
	events, err := signDrafts(v, drafts)
	if err != nil {
		return err
	}
	o.lanes = make([][]*rooms.Event, lanes)
	for i, ev := range events {
		o.lanes[laneOf[i]] = append(o.lanes[laneOf[i]], ev)
		o.events.Store(ev.EventID(), ev)
	}
	return nil
}

// transactions cuts a chain into signed /send transactions of at most
// size PDUs, in chain order. Bodies are canonical JSON put together from
// the PDUs' canonical JSON; the X-Matrix signature covers the parsed body.
func (o *origin) transactions(chain []*rooms.Event, target string, size int, now time.Time) ([]txn, error) {
	var out []txn
	for start := 0; start < len(chain); start += size {
		part := chain[start:min(start+size, len(chain))]
		var b strings.Builder
		fmt.Fprintf(&b, `{"origin":%q,"origin_server_ts":%d,"pdus":[`, o.srv.Name, now.UnixMilli())
		ids := make([]string, len(part))
		for i, ev := range part {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(ev.JSON())
			ids[i] = ev.EventID()
		}
		b.WriteString("]}")
		body := []byte(b.String())
		content, err := rooms.ParseJSON(body)
		if err != nil {
			return nil, fmt.Errorf("transaction body: %w", err)
		}
		txnID := fmt.Sprintf("load%d.%s", now.UnixNano(), strings.TrimPrefix(part[0].EventID(), "$"))
		uri := "/_matrix/federation/v1/send/" + url.PathEscape(txnID)
		auth, err := signRequest(o.srv.Signer, target, http.MethodPut, uri, content)
		if err != nil {
			return nil, err
		}
		out = append(out, txn{uri: uri, body: body, auth: auth, ids: ids})
	}
	return out, nil
}
