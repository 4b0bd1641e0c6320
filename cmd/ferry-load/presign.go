package main

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/ferry-matrix/ferry/rooms"
)

// draft is an event under construction: its object (hashed, not yet
// signed), its ID and the key that will sign it.
type draft struct {
	obj map[string]any
	id  string
	key rooms.SigningKey
}

// newDraft builds t's event object as rooms.BuildEvent does and computes
// its event ID, which does not depend on signatures: so a chain of events
// (each naming the previous one in prev_events) gets its IDs in order,
// cheaply, and the expensive ed25519 signing runs afterwards on every CPU
// (signDrafts). The room ID of a create event of a version deriving room
// IDs from it is left out, as BuildEvent leaves it.
func newDraft(v rooms.Version, t rooms.EventTemplate, key rooms.SigningKey) (draft, error) {
	content := t.Content
	if content == nil {
		content = map[string]any{}
	}
	raw, err := rooms.EncodeCanonical(content)
	if err != nil {
		return draft{}, fmt.Errorf("%s content: %w", t.Type, err)
	}
	parsed, err := rooms.ParseJSON(raw)
	if err != nil {
		return draft{}, fmt.Errorf("%s content: %w", t.Type, err)
	}
	obj := map[string]any{
		"type":             t.Type,
		"sender":           t.Sender,
		"content":          parsed,
		"prev_events":      anyList(t.PrevEvents),
		"auth_events":      anyList(t.AuthEvents),
		"depth":            t.Depth,
		"origin_server_ts": t.OriginServerTS,
	}
	if t.StateKey != nil {
		obj["state_key"] = *t.StateKey
	}
	if t.RoomID != "" {
		obj["room_id"] = t.RoomID
	}
	h, err := rooms.ContentHash(obj)
	if err != nil {
		return draft{}, fmt.Errorf("%s: content hash: %w", t.Type, err)
	}
	obj["hashes"] = map[string]any{"sha256": rooms.EncodeBase64(h[:])}
	ref, err := rooms.ReferenceHash(v, obj)
	if err != nil {
		return draft{}, fmt.Errorf("%s: reference hash: %w", t.Type, err)
	}
	return draft{obj: obj, id: "$" + rooms.EncodeBase64URL(ref[:]), key: key}, nil
}

func anyList(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// signDrafts signs every draft on every CPU and returns the events, in
// order. An event whose ID differs from its draft's is an error (it would
// break the chain built on it).
func signDrafts(v rooms.Version, drafts []draft) ([]*rooms.Event, error) {
	out := make([]*rooms.Event, len(drafts))
	workers := runtime.GOMAXPROCS(0)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int, 256)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				d := drafts[i]
				// hashes is already set; SignEvent recomputes the same
				// value and adds the signature over the redacted event.
				if err := rooms.SignEvent(v, d.obj, d.key); err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("sign %s: %w", d.id, err)
					mu.Unlock()
					continue
				}
				ev, err := rooms.NewEventFromObject(v, d.obj)
				if err == nil && ev.EventID() != d.id {
					err = fmt.Errorf("signed event has ID %s", ev.EventID())
				}
				if err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("event %s: %w", d.id, err)
					mu.Unlock()
					continue
				}
				out[i] = ev
			}
		}()
	}
	for i := range drafts {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}
