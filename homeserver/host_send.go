package homeserver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferry-matrix/ferry/store"
)

// keyedMutex serializes work per key; keys nobody holds take no memory.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*roomLock
}

// lock locks key; the returned func unlocks it.
func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*roomLock)
	}
	l := k.locks[key]
	if l == nil {
		l = &roomLock{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

// sendOnce sends le unless (sender, txnID) was sent already, in which
// case the first event's ID is returned. Sends of one (sender, txnID) are
// serialized in memory, and the record is written in the database
// transaction of the event, so neither concurrent requests nor a crash
// can make two events of one transaction ID.
func (h *Host) sendOnce(ctx context.Context, roomID string, le LocalEvent, txnID string) (string, error) {
	unlock := h.sends.lock(le.Sender + "\x00" + txnID)
	defer unlock()
	id, err := h.store().LocalTxnEvent(ctx, le.Sender, txnID)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return "", fmt.Errorf("send: %w", err)
	}
	ev, err := h.Engine.sendEvent(ctx, roomID, le, &store.LocalTxn{Sender: le.Sender, TxnID: txnID})
	if errors.Is(err, store.ErrConflict) {
		// Another process sharing the database recorded it first.
		return h.store().LocalTxnEvent(ctx, le.Sender, txnID)
	}
	if err != nil {
		return "", err
	}
	return ev.EventID(), nil
}

// typingTimers withdraws typing notices whose timeout passed.
type typingTimers struct {
	mu     sync.Mutex
	timers map[string]*time.Timer
}

func typingKey(roomID, userID string) string { return roomID + "\x00" + userID }

// start (re)arms the withdrawal of userID's typing notice in roomID.
func (t *typingTimers) start(roomID, userID string, timeout time.Duration, withdraw func()) {
	key := typingKey(roomID, userID)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.timers == nil {
		t.timers = make(map[string]*time.Timer)
	}
	if old := t.timers[key]; old != nil {
		old.Stop()
	}
	var timer *time.Timer
	timer = time.AfterFunc(timeout, func() {
		t.mu.Lock()
		current := t.timers[key] == timer
		if current {
			delete(t.timers, key)
		}
		t.mu.Unlock()
		if current {
			withdraw()
		}
	})
	t.timers[key] = timer
}

// stop cancels a pending withdrawal (the user stopped typing itself).
func (t *typingTimers) stop(roomID, userID string) {
	key := typingKey(roomID, userID)
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.timers[key]; old != nil {
		old.Stop()
		delete(t.timers, key)
	}
}

// stopAll cancels every pending withdrawal.
func (t *typingTimers) stopAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for key, timer := range t.timers {
		timer.Stop()
		delete(t.timers, key)
	}
}
