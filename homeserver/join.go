package homeserver

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ferry-matrix/ferry/rooms"
	"github.com/ferry-matrix/ferry/store"
)

// Joiner is what the engine asks of a resident server to join a room
// there (make_join, send_join v2). *federation.Client satisfies it; the
// engine uses it when its Remote does.
type Joiner interface {
	// MakeJoin asks server for a join template for userID, offering
	// versions; it returns the room version and the template's JSON.
	MakeJoin(ctx context.Context, server, roomID, userID string, versions []string) (roomVersion string, template []byte, err error)
	// SendJoin sends the signed join and returns the room state before
	// it, the auth chain, and the join as the resident returned it (nil
	// when the answer has none).
	SendJoin(ctx context.Context, server, roomID, eventID string, event []byte) (state, authChain [][]byte, join []byte, err error)
}

// AliasResolver asks an alias's server what the alias points to (GET
// /query/directory). *federation.Client satisfies it; the engine uses it
// when its Remote does.
type AliasResolver interface {
	ResolveRoomAlias(ctx context.Context, alias string) (roomID string, servers []string, err error)
}

// ErrEveryServerFailed is matched (errors.Is) when a join, leave or knock
// through other servers failed with each of them; the error lists why.
var ErrEveryServerFailed = errors.New("every server failed")

// JoinRoomByAlias resolves alias (ours from the store, another server's
// through /query/directory) and joins userID to the room through the
// servers it names, the alias's server first.
func (e *Engine) JoinRoomByAlias(ctx context.Context, alias, userID string) (*rooms.Event, error) {
	a, err := rooms.ParseRoomAlias(alias)
	if err != nil {
		return nil, badRequest("join: alias: %v", err)
	}
	aliasServer := string(a.Server())
	var roomID string
	var servers []string
	if aliasServer == e.ServerName {
		roomID, servers, err = e.ResolveAlias(ctx, alias)
	} else {
		resolver, ok := e.Remote.(AliasResolver)
		if !ok {
			return nil, errors.New("join: the engine has no remote that can resolve aliases")
		}
		roomID, servers, err = resolver.ResolveRoomAlias(ctx, alias)
	}
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", alias, err)
	}
	via := []string{aliasServer}
	for _, s := range servers {
		if !slices.Contains(via, s) {
			via = append(via, s)
		}
	}
	return e.JoinRoom(ctx, roomID, userID, via)
}

// JoinRoom joins userID, a local user, to roomID. When this server has a
// joined member in the room the join is an ordinary local event (with one
// of our users as authoriser in a restricted room); otherwise each
// server of via is asked in turn (make_join with every version we support,
// send_join v2) until one answers with a state that verifies and
// authorises the join, which is then persisted in one transaction: the
// room is live (a room we hold already takes the join in through the
// inbound pipeline, fetching what it missed). Servers that fail are skipped and the reason logged; the
// error lists every reason when none succeeds. It returns the join event.
func (e *Engine) JoinRoom(ctx context.Context, roomID, userID string, via []string) (*rooms.Event, error) {
	user, err := rooms.ParseUserID(userID)
	if err != nil {
		return nil, badRequest("join: user: %v", err)
	}
	if string(user.Server()) != e.ServerName {
		return nil, badRequest("join: %s is not a user of %s", userID, e.ServerName)
	}
	if _, err := rooms.ParseRoomID(roomID); err != nil {
		return nil, badRequest("join: room: %v", err)
	}
	_, in, err := e.roomVersion(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", roomID, err)
	}
	if in {
		servers, err := e.Store.JoinedServers(ctx, roomID)
		if err != nil {
			return nil, fmt.Errorf("join %s: %w", roomID, err)
		}
		if slices.Contains(servers, e.ServerName) {
			content, err := e.localJoinContent(ctx, roomID, userID)
			var refusal *JoinRefusal
			switch {
			case err == nil:
				return e.SendEvent(ctx, roomID, LocalEvent{Type: "m.room.member", StateKey: rooms.StringPtr(userID), Sender: userID, Content: content})
			case !errors.As(err, &refusal):
				return nil, fmt.Errorf("join %s: %w", roomID, err)
			}
			// A restricted room none of our users may authorise joins
			// of: a resident that can does the handshake.
			e.Logger.Info().Str(fieldRoomID, roomID).Str("user", userID).Str("reason", refusal.Message).Msg("restricted join: asking a resident to authorise it")
		} else if len(via) == 0 {
			// None of our users is in the room any more, so our copy may
			// be stale: a resident does the handshake, one of those our
			// copy names when the caller names none.
			via = servers
		}
	}
	joiner, ok := e.Remote.(Joiner)
	if !ok {
		return nil, errors.New("join: the engine has no remote that can join rooms")
	}
	var failures []error
	for _, server := range via {
		if server == e.ServerName || server == "" {
			continue
		}
		ev, err := e.joinVia(ctx, joiner, server, roomID, userID)
		if err == nil {
			e.Logger.Info().Str(fieldRoomID, roomID).Str("via", server).Str("user", userID).Str(fieldEventID, ev.EventID()).Msg("joined a remote room")
			return ev, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("join %s: %w", roomID, ctx.Err())
		}
		e.Logger.Warn().Err(err).Str(fieldRoomID, roomID).Str("via", server).Msg("joining through this server failed; trying the next")
		failures = append(failures, fmt.Errorf("via %s: %w", server, err))
	}
	if len(failures) == 0 {
		return nil, badRequest("join %s: no server to join through", roomID)
	}
	return nil, fmt.Errorf("join %s: %w: %w", roomID, ErrEveryServerFailed, errors.Join(failures...))
}

// joinVia runs the join handshake with one resident server.
func (e *Engine) joinVia(ctx context.Context, joiner Joiner, server, roomID, userID string) (*rooms.Event, error) {
	versionID, rawTemplate, err := joiner.MakeJoin(ctx, server, roomID, userID, rooms.SupportedVersionIDs())
	if err != nil {
		return nil, fmt.Errorf("make_join: %w", err)
	}
	v, err := rooms.LookupVersion(versionID)
	if err != nil {
		return nil, fmt.Errorf("make_join: the room's version is not supported here: %w", err)
	}
	t, err := memberTemplate(rawTemplate, roomID, userID, "join")
	if err != nil {
		return nil, fmt.Errorf("make_join: %w", err)
	}
	t.OriginServerTS = e.now().UnixMilli()
	join, err := rooms.BuildEvent(v, t, e.Signer)
	if err != nil {
		return nil, fmt.Errorf("make_join: template: %w", err)
	}
	if pj, ok := e.partialJoinerOf(ctx, joiner, roomID); ok {
		return e.joinPartially(ctx, pj, server, roomID, v, join) // partial_join.go
	}
	rawState, rawChain, rawJoin, err := joiner.SendJoin(ctx, server, roomID, join.EventID(), join.JSON())
	if err != nil {
		return nil, fmt.Errorf("send_join: %w", err)
	}
	if join, err = e.returnedJoin(ctx, v, join, rawJoin); err != nil {
		return nil, err
	}
	checked, err := e.verifyJoinAnswer(ctx, v, roomID, join, rawState, rawChain)
	if err != nil {
		return nil, fmt.Errorf("send_join: %w", err)
	}
	if err := e.persistJoin(ctx, roomID, server, join, checked); err != nil {
		return nil, err
	}
	return join, nil
}

// returnedJoin is the join a resident's send_join answer carries back
// (raw; nil when none): the resident may have added its signature
// (restricted rooms), but the event ID, which signatures do not cover,
// must not change, and the signatures must verify. Without one, the join
// sent stands.
func (e *Engine) returnedJoin(ctx context.Context, v rooms.Version, join *rooms.Event, raw []byte) (*rooms.Event, error) {
	if raw == nil {
		return join, nil
	}
	returned, err := rooms.ParseEvent(v, raw)
	if err != nil {
		return nil, fmt.Errorf("send_join: event: %w", err)
	}
	if returned.EventID() != join.EventID() {
		return nil, fmt.Errorf("send_join: the returned join is %s, not the %s we sent", returned.EventID(), join.EventID())
	}
	if e.Keys == nil {
		return nil, errors.New("no key source to verify signatures")
	}
	if err := rooms.VerifyEventSignatures(returned, e.Keys.KeyLookup(ctx)); err != nil {
		return nil, fmt.Errorf("send_join: the returned join: %w", err)
	}
	return returned, nil
}

// localJoinContent is the content of a join of a local user into a room we
// are in: with join_authorised_via_users_server naming one of our users
// when the room is restricted. A *JoinRefusal says none of our users may
// authorise it.
func (e *Engine) localJoinContent(ctx context.Context, roomID, userID string) (map[string]any, error) {
	unlock := e.lockRoom(roomID)
	defer unlock()
	h, err := e.head(ctx, roomID)
	if err != nil {
		return nil, err
	}
	content := map[string]any{"membership": "join"}
	if h == nil {
		return content, nil
	}
	via, err := e.restrictedAuthoriser(ctx, h, roomID, userID)
	if err != nil {
		return nil, err
	}
	if via != "" {
		content["join_authorised_via_users_server"] = via
	}
	return content, nil
}

// memberTemplate checks a make_join or make_leave template (room, sender,
// state key, type, membership) and returns it as a template to sign;
// origin_server_ts is left for the caller.
func memberTemplate(raw []byte, roomID, userID, membership string) (rooms.EventTemplate, error) {
	tree, err := rooms.ParseJSON(raw)
	if err != nil {
		return rooms.EventTemplate{}, fmt.Errorf("template: %w", err)
	}
	obj, _ := tree.(map[string]any)
	str := func(k string) string { s, _ := obj[k].(string); return s }
	content, _ := obj["content"].(map[string]any)
	stateKey, hasStateKey := obj["state_key"].(string)
	switch {
	case obj == nil:
		return rooms.EventTemplate{}, errors.New("template is not an object")
	case str("type") != "m.room.member":
		return rooms.EventTemplate{}, fmt.Errorf("template type is %q, not m.room.member", str("type"))
	case str("room_id") != roomID:
		return rooms.EventTemplate{}, fmt.Errorf("template room is %q, not %s", str("room_id"), roomID)
	case str("sender") != userID:
		return rooms.EventTemplate{}, fmt.Errorf("template sender is %q, not %s", str("sender"), userID)
	case !hasStateKey || stateKey != userID:
		return rooms.EventTemplate{}, fmt.Errorf("template state key is %q, not %s", stateKey, userID)
	case content == nil || content["membership"] != membership:
		return rooms.EventTemplate{}, fmt.Errorf("template membership is not %s", membership)
	}
	depth, _ := obj["depth"].(int64)
	ids := func(k string) ([]string, error) {
		list, ok := obj[k].([]any)
		if !ok {
			return nil, fmt.Errorf("template %s is not a list", k)
		}
		out := make([]string, 0, len(list))
		for _, x := range list {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("template %s holds a non-string", k)
			}
			out = append(out, s)
		}
		return out, nil
	}
	prev, err := ids("prev_events")
	if err != nil {
		return rooms.EventTemplate{}, err
	}
	auth, err := ids("auth_events")
	if err != nil {
		return rooms.EventTemplate{}, err
	}
	return rooms.EventTemplate{
		Type: "m.room.member", StateKey: rooms.StringPtr(userID), Sender: userID, RoomID: roomID,
		Content: content, PrevEvents: prev, AuthEvents: auth, Depth: depth,
	}, nil
}

// joinChunk is how many state events of a send_join answer are parsed
// and checked at once, and how many outliers are written per
// transaction: a big room's answer is never held parsed all at once. A
// variable so tests can cross chunk boundaries with small rooms.
var joinChunk = 4096

// joinState is a verified send_join answer.
type joinState struct {
	version rooms.Version
	state   rooms.StateMap
	// events are the usable events of state and auth chain held parsed:
	// every one of them from verifyJoinResponse; from verifyJoinAnswer the
	// auth chain and the state events whose auth is judged last.
	events map[string]*rooms.Event
	// compact holds the canonical JSON of verified, authorised state
	// events no other event's auth needs (verifyJoinAnswer): a parsed
	// event is several times the size of its JSON, and a room of 100,000
	// members would otherwise be held parsed whole.
	compact map[string]compactEvent
	// joined marks the compact events that are joins.
	joined map[string]bool
	// rejected are auth chain events that failed auth; they are stored
	// as rejected so they are not fetched again.
	rejected map[string]string
	servers  []string // servers with joined members in the state
}

// compactEvent is a verified event held as its canonical JSON, with its
// depth (the order outliers are written in).
type compactEvent struct {
	json  []byte
	depth int64
}

// event returns a verified event of the answer, parsing it again from its
// canonical JSON when it is held compact (and keeping it parsed then).
func (js *joinState) event(id string) *rooms.Event {
	if ev, ok := js.events[id]; ok {
		return ev
	}
	c, ok := js.compact[id]
	if !ok {
		return nil
	}
	ev, err := rooms.ParseEventTrusted(js.version, c.json, id)
	if err != nil {
		// Our own canonical encoding of an event that parsed before.
		return nil
	}
	js.events[id] = ev
	delete(js.compact, id)
	return ev
}

// inflate parses every compact event again (on every CPU), for callers
// that read events directly.
func (js *joinState) inflate() error {
	ids := make([]string, 0, len(js.compact))
	for id := range js.compact {
		ids = append(ids, id)
	}
	parsed := make([]*rooms.Event, len(ids))
	errs := make([]error, len(ids))
	parallelEach(len(ids), func(i int) { parsed[i], errs[i] = rooms.ParseEventTrusted(js.version, js.compact[ids[i]].json, ids[i]) })
	for i, id := range ids {
		if errs[i] != nil {
			return errs[i]
		}
		js.events[id] = parsed[i]
	}
	js.compact = map[string]compactEvent{}
	return nil
}

// verifyJoinResponse is verifyJoinAnswer with every event of the answer
// held parsed in the result's events.
func (e *Engine) verifyJoinResponse(ctx context.Context, v rooms.Version, roomID string, join *rooms.Event, rawState, rawChain [][]byte) (*joinState, error) {
	js, err := e.verifyJoinAnswer(ctx, v, roomID, join, rawState, rawChain)
	if err != nil {
		return nil, err
	}
	if err := js.inflate(); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return js, nil
}

// verifyJoinAnswer checks every event of a send_join answer: format
// (parsed under the room's version), room, signatures and hashes, then
// auth against its own auth events (in auth order); every state event must
// pass, and the state must authorise the join.
//
// The auth chain is parsed first and held; the state follows in chunks
// of joinChunk, parsed and signature-checked on every CPU. When the auth
// chain is closed (it names its own auth events, as the spec has it),
// a state event whose auth events are all in it is judged at once and
// kept only as canonical JSON (js.compact). The entries of rawState and
// rawChain are cleared once parsed.
func (e *Engine) verifyJoinAnswer(ctx context.Context, v rooms.Version, roomID string, join *rooms.Event, rawState, rawChain [][]byte) (*joinState, error) {
	if e.Keys == nil {
		return nil, errors.New("no key source to verify signatures")
	}
	keys := e.Keys.KeyLookup(ctx)
	js := &joinState{version: v, state: rooms.StateMap{}, events: map[string]*rooms.Event{},
		compact: map[string]compactEvent{}, joined: map[string]bool{}, rejected: map[string]string{}}
	stateIDs := map[string]bool{}
	dropped := map[string]string{}
	known := func(id string) bool {
		_, parsed := js.events[id]
		_, compact := js.compact[id]
		_, bad := dropped[id]
		return parsed || compact || bad
	}
	// take parses and checks raws (on every CPU, each event not seen
	// before once), then reads them in order as if that ran inline; it
	// returns the events it added.
	take := func(raws [][]byte, inState bool) ([]string, error) {
		parsed := make([]*rooms.Event, len(raws))
		parseErrs := make([]error, len(raws))
		parallelEach(len(raws), func(i int) { parsed[i], parseErrs[i] = rooms.ParseEvent(v, raws[i]) })
		// The events keep their own canonical bytes: the answer's
		// copies go now.
		clear(raws)
		firstOf := map[string]int{}
		var toCheck []int
		for i, ev := range parsed {
			if ev == nil || known(ev.EventID()) || (ev.RoomID() != roomID && ev.Type() != "m.room.create") {
				continue
			}
			if _, seen := firstOf[ev.EventID()]; !seen {
				firstOf[ev.EventID()] = i
				toCheck = append(toCheck, i)
			}
		}
		checked := make([]*rooms.Event, len(raws))
		checkErrs := make([]error, len(raws))
		parallelEach(len(toCheck), func(j int) {
			i := toCheck[j]
			checked[i], checkErrs[i] = rooms.CheckEvent(parsed[i], keys)
		})
		var added []string
		for i, ev := range parsed {
			if err := parseErrs[i]; err != nil {
				if inState {
					return nil, fmt.Errorf("state event: %w", err)
				}
				e.Logger.Warn().Err(err).Str(fieldRoomID, roomID).Msg("send_join: unparseable auth chain event left out")
				continue
			}
			id := ev.EventID()
			if inState {
				k, ok := rooms.StateTupleOf(ev)
				if !ok {
					return nil, fmt.Errorf("state event %s has no state key", id)
				}
				if other, dup := js.state[k]; dup && other != id {
					return nil, fmt.Errorf("state holds both %s and %s for (%s, %s)", other, id, k.Type, k.StateKey)
				}
				js.state[k] = id
				stateIDs[id] = true
			}
			if known(id) {
				continue
			}
			first, sameRoom := firstOf[id]
			if !sameRoom {
				dropped[id] = "event of another room"
				continue
			}
			if err := checkErrs[first]; err != nil {
				dropped[id] = "signatures: " + err.Error()
				continue
			}
			js.events[id] = checked[first]
			added = append(added, id)
		}
		return added, nil
	}

	chainIDs, err := take(rawChain, false)
	if err != nil {
		return nil, err
	}
	inChain := make(map[string]bool, len(chainIDs))
	for _, id := range chainIDs {
		inChain[id] = true
	}
	// The create event the chain holds (the one naming this room): state
	// events are judged against it before the state names its own.
	var chainCreate *rooms.Event
	closed := true
	for _, id := range chainIDs {
		ev := js.events[id]
		if ev.Type() == "m.room.create" && checkCreateNamesRoom(v, ev, roomID) == nil {
			chainCreate = ev
		}
		for _, a := range ev.AuthEvents() {
			if !inChain[a] {
				closed = false
			}
		}
	}

	// Auth every event against its auth events, dependencies first
	// (iteratively: the chain's depth is the remote server's choice).
	isRejected := func(x string) bool { _, r := js.rejected[x]; return r }
	const (
		visiting = iota + 1
		done
	)
	mark := map[string]int{}
	type frame struct {
		id   string
		next int // index of the next auth event to look at
	}
	authInOrder := func(root string, create *rooms.Event) error {
		stack := []frame{{id: root}}
		for len(stack) > 0 {
			top := len(stack) - 1
			id := stack[top].id
			if stack[top].next == 0 {
				if mark[id] == done || js.event(id) == nil {
					stack = stack[:top]
					continue
				}
				mark[id] = visiting
			}
			ev := js.event(id)
			auth := ev.AuthEvents()
			if i := stack[top].next; i < len(auth) {
				stack[top].next++
				a := auth[i]
				switch {
				case mark[a] == done || js.event(a) == nil:
				case mark[a] == visiting:
					return fmt.Errorf("event %s is part of an auth_events cycle", a)
				default:
					stack = append(stack, frame{id: a})
				}
				continue
			}
			var authEvs []*rooms.Event
			for _, a := range auth {
				if ae := js.event(a); ae != nil {
					authEvs = append(authEvs, ae)
				}
			}
			if err := rooms.CheckAuthEvents(ev, authEvs, create, isRejected); err != nil {
				js.rejected[id] = "auth events: " + err.Error()
			}
			mark[id] = done
			stack = stack[:top]
		}
		return nil
	}
	// State events are judged as they come once the create event is
	// known: the chain's, or (room versions whose events do not name it)
	// the state's own; until then they wait, parsed.
	judgeCreate := chainCreate
	if judgeCreate == nil && closed {
		judgeCreate = findStateCreate(v, roomID, rawState, keys)
	}
	var pending []string
	chainJudged := false
	judgePending := func() error {
		if !chainJudged {
			slices.Sort(chainIDs)
			for _, id := range chainIDs {
				if err := authInOrder(id, judgeCreate); err != nil {
					return err
				}
			}
			chainJudged = true
		}
		for _, id := range pending {
			ev := js.events[id]
			if ev == nil || slices.ContainsFunc(ev.AuthEvents(), func(a string) bool { return !inChain[a] }) {
				continue // judged last, with the events it names
			}
			if err := authInOrder(id, judgeCreate); err != nil {
				return err
			}
			if reason, bad := js.rejected[id]; bad {
				return fmt.Errorf("state event %s fails auth: %s", id, reason)
			}
			js.compact[id] = compactEvent{json: ev.JSON(), depth: ev.Depth()}
			if ev.Type() == "m.room.member" && ev.Membership() == "join" {
				js.joined[id] = true
			}
			delete(js.events, id)
		}
		pending = pending[:0]
		return nil
	}
	for start := 0; start < len(rawState); start += joinChunk {
		added, err := take(rawState[start:min(start+joinChunk, len(rawState))], true)
		if err != nil {
			return nil, err
		}
		if !closed {
			continue
		}
		pending = append(pending, added...)
		if judgeCreate == nil {
			if ev := js.events[js.state[rooms.CreateTuple]]; ev != nil && checkCreateNamesRoom(v, ev, roomID) == nil {
				judgeCreate = ev
			}
		}
		if judgeCreate != nil {
			if err := judgePending(); err != nil {
				return nil, err
			}
		}
	}
	for id := range stateIDs {
		if reason, bad := dropped[id]; bad {
			return nil, fmt.Errorf("state event %s: %s", id, reason)
		}
	}
	createID, ok := js.state[rooms.CreateTuple]
	if !ok {
		return nil, errors.New("the state has no create event")
	}
	create := js.event(createID)
	if err := checkCreateNamesRoom(v, create, roomID); err != nil {
		return nil, err
	}
	if judgeCreate != nil && createID != judgeCreate.EventID() {
		return nil, fmt.Errorf("the state's create event %s is not the one its events were judged against, %s", createID, judgeCreate.EventID())
	}
	ids := make([]string, 0, len(js.events))
	for id := range js.events {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if err := authInOrder(id, create); err != nil {
			return nil, err
		}
	}
	for id := range stateIDs {
		if reason, bad := js.rejected[id]; bad {
			return nil, fmt.Errorf("state event %s fails auth: %s", id, reason)
		}
	}
	for id, reason := range js.rejected {
		e.Logger.Warn().Str(fieldRoomID, roomID).Str(fieldEventID, id).Str("reason", reason).Msg("send_join: auth chain event rejected")
	}
	// The join itself: its auth events must be among those returned and
	// the state must authorise it.
	var joinAuth []*rooms.Event
	for _, a := range join.AuthEvents() {
		ae := js.event(a)
		if ae == nil {
			return nil, fmt.Errorf("auth event %s of the join is missing from the answer", a)
		}
		joinAuth = append(joinAuth, ae)
	}
	if err := rooms.CheckAuthEvents(join, joinAuth, create, isRejected); err != nil {
		return nil, fmt.Errorf("the join fails auth against its auth events: %w", err)
	}
	before := make(map[rooms.StateTuple]*rooms.Event)
	for _, k := range authKeys(join) {
		if id, ok := js.state[k]; ok {
			before[k] = js.event(id)
		}
	}
	if err := rooms.CheckAuth(join, before); err != nil {
		return nil, fmt.Errorf("the state does not authorise the join: %w", err)
	}
	seen := map[string]bool{}
	for k, id := range js.state {
		if k.Type != "m.room.member" {
			continue
		}
		if ev, parsed := js.events[id]; !js.joined[id] && (!parsed || ev.Membership() != "join") {
			continue
		}
		if s := serverOf(k.StateKey); s != "" && !seen[s] {
			seen[s] = true
			js.servers = append(js.servers, s)
		}
	}
	slices.Sort(js.servers)
	return js, nil
}

// findStateCreate returns the verified create event of roomID among the
// raw state events, looked for before the state is read in order (room
// versions whose events do not name the create event as an auth event
// have it in the state only, which may put it last); nil when none is
// found or verifies. Only events whose bytes name the create type are
// parsed.
func findStateCreate(v rooms.Version, roomID string, rawState [][]byte, keys rooms.KeyLookup) *rooms.Event {
	for _, raw := range rawState {
		if !bytes.Contains(raw, []byte(`"m.room.create"`)) {
			continue
		}
		ev, err := rooms.ParseEvent(v, raw)
		if err != nil || ev.Type() != "m.room.create" {
			continue
		}
		if sk, ok := ev.StateKey(); !ok || sk != "" || checkCreateNamesRoom(v, ev, roomID) != nil {
			continue
		}
		if checked, err := rooms.CheckEvent(ev, keys); err == nil {
			return checked
		}
	}
	return nil
}

// checkCreateNamesRoom checks that create is the create event of roomID:
// in versions deriving the room ID from it, by its event ID.
func checkCreateNamesRoom(v rooms.Version, create *rooms.Event, roomID string) error {
	if create == nil {
		return errors.New("the create event did not verify")
	}
	if v.RoomIDs == rooms.RoomIDFromCreate {
		if want := string(rooms.RoomIDFromCreateEventID(rooms.EventID(create.EventID()))); want != roomID {
			return fmt.Errorf("the create event %s is of room %s, not %s", create.EventID(), want, roomID)
		}
		return nil
	}
	if create.RoomID() != roomID {
		return fmt.Errorf("the create event is of room %s, not %s", create.RoomID(), roomID)
	}
	return nil
}

// persistJoin writes a verified join: the state and auth chain as
// outliers, in transactions of joinChunk events (compact events parsed
// again chunk by chunk, on every CPU, and let go once written), then in
// one transaction the join with the state before it, the room's current
// state and status, the host log entry, and the join queued for the other
// servers in the room. Outliers written for a join that then fails are
// verified events of the room; a retry skips them.
func (e *Engine) persistJoin(ctx context.Context, roomID, via string, join *rooms.Event, js *joinState) error {
	if _, in, err := e.roomVersion(ctx, roomID); err != nil {
		return fmt.Errorf("join %s: %w", roomID, err)
	} else if in {
		// We hold the room: the join goes through the inbound pipeline
		// like any event of it (the resident sends it to us too).
		if err := e.takeIn(ctx, via, join); err != nil {
			return fmt.Errorf("join %s: the resident accepted the join but this server did not: %w", roomID, err)
		}
		return nil
	}
	if err := e.persistJoinOutliers(ctx, join.EventID(), js); err != nil {
		return fmt.Errorf("join %s: persist: %w", roomID, err)
	}
	var batch store.Batch
	var dests []string
	for _, s := range js.servers {
		if s != e.ServerName && s != via {
			dests = append(dests, s)
		}
	}
	batch.Events = append(batch.Events, store.NewEvent{
		Event: join, Outcome: store.Accepted, StateBefore: &store.StateRef{Changes: toStore(js.state)}, Destinations: dests,
	})
	batch.CurrentState = &store.StateRef{AfterEvent: join.EventID()}
	batch.RoomStatus = store.RoomJoined
	batch.HostLog = []store.HostLogEntry{{Kind: store.HostEvent, RoomID: roomID, EventID: join.EventID()}}
	unlock := e.lockRoom(roomID)
	defer unlock()
	if _, in, err := e.roomVersion(ctx, roomID); err != nil {
		return fmt.Errorf("join %s: %w", roomID, err)
	} else if in {
		return fmt.Errorf("join %s: this server joined the room meanwhile", roomID)
	}
	if err := e.persist(ctx, batch); err != nil {
		return fmt.Errorf("join %s: persist: %w", roomID, err)
	}
	e.dropHead(roomID)
	return nil
}

// persistJoinOutliers writes the events of a verified answer but the
// join as outliers (rejected ones as rejected), joinChunk per
// transaction, by depth; compact events are parsed again for
// their chunk (the next chunk while the store writes one) and dropped
// from js once parsed.
func (e *Engine) persistJoinOutliers(ctx context.Context, joinID string, js *joinState) error {
	type outlier struct {
		id    string
		depth int64
	}
	order := make([]outlier, 0, len(js.events)+len(js.compact))
	for id, ev := range js.events {
		order = append(order, outlier{id, ev.Depth()})
	}
	for id, c := range js.compact {
		order = append(order, outlier{id, c.depth})
	}
	order = slices.DeleteFunc(order, func(o outlier) bool { return o.id == joinID })
	// By depth, so an event's prev and auth events are mostly written
	// before it (in its own transaction or the one before, whose event
	// numbers the store has cached): an edge to an event not yet written
	// costs a placeholder row and lookups.
	slices.SortFunc(order, func(a, b outlier) int {
		if c := cmp.Compare(a.depth, b.depth); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	// The next chunk is parsed while the store writes this one. Only the
	// parsing goroutine touches js.compact meanwhile.
	type prepared struct {
		evs []store.NewEvent
		err error
	}
	next := make(chan prepared, 1)
	stop := make(chan struct{})
	defer func() {
		// On an error, let the parsing goroutine end before js is
		// handed back.
		close(stop)
		for range next {
		}
	}()
	go func() {
		defer close(next)
		for start := 0; start < len(order); start += joinChunk {
			chunk := order[start:min(start+joinChunk, len(order))]
			evs := make([]store.NewEvent, len(chunk))
			errs := make([]error, len(chunk))
			parallelEach(len(chunk), func(i int) {
				id := chunk[i].id
				ev, ok := js.events[id]
				if !ok {
					ev, errs[i] = rooms.ParseEventTrusted(js.version, js.compact[id].json, id)
				}
				evs[i] = store.NewEvent{Event: ev, Outcome: store.Outlier}
				if reason, bad := js.rejected[id]; bad {
					evs[i] = store.NewEvent{Event: ev, Outcome: store.Rejected, RejectedReason: reason}
				}
			})
			for _, o := range chunk {
				delete(js.compact, o.id)
			}
			select {
			case next <- prepared{evs: evs, err: errors.Join(errs...)}:
			case <-stop:
				return
			}
		}
	}()
	for p := range next {
		if p.err != nil {
			return p.err
		}
		if err := e.persist(ctx, store.Batch{Events: p.evs}); err != nil {
			return err
		}
	}
	return nil
}

// takeIn runs a membership event a resident accepted for one of our users
// through our inbound pipeline, for a room we hold; origin is the
// resident, which gaps are filled from.
func (e *Engine) takeIn(ctx context.Context, origin string, ev *rooms.Event) error {
	res := e.ReceivePDUs(ctx, origin, [][]byte{ev.JSON()})
	return res[ev.EventID()]
}

// joinedHere reports whether we hold roomID with at least one of our
// users joined, and the servers with joined members by our copy.
func (e *Engine) joinedHere(ctx context.Context, roomID string) (bool, []string, error) {
	_, in, err := e.roomVersion(ctx, roomID)
	if err != nil || !in {
		return false, nil, err
	}
	servers, err := e.Store.JoinedServers(ctx, roomID)
	if err != nil {
		return false, nil, err
	}
	return slices.Contains(servers, e.ServerName), servers, nil
}
