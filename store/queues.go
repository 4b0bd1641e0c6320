package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// TxnResponse returns the response stored for an inbound transaction
// (origin, txnID); ErrNotFound if it was not seen (or expired).
func (db *DB) TxnResponse(ctx context.Context, origin, txnID string) ([]byte, error) {
	var resp []byte
	err := db.readRow(ctx, db.d.txnResponse, []any{origin, txnID}, &resp)
	if errors.Is(err, sql.ErrNoRows) {
		err = fmt.Errorf("txn %s/%s: %w", origin, txnID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return resp, nil
}

// StoreTxnResponse records the response to an inbound transaction, so a
// retry of it is answered the same without processing it again. It is a
// relaxed write (see writeRelaxed): the events the transaction brought
// were committed durably before it; should a power cut lose the answer, a
// retry is processed again and answered the same from the events held.
func (db *DB) StoreTxnResponse(ctx context.Context, origin, txnID string, response []byte) error {
	err := db.writeRelaxed(ctx, func(t *txn) error {
		_, err := t.exec(db.d.putTxnResponse, origin, txnID, response, db.now())
		return err
	})
	if err != nil {
		return fmt.Errorf("store: store txn response: %w", err)
	}
	return nil
}

// ExpireTxns forgets inbound transactions received before cutoff and
// returns how many.
func (db *DB) ExpireTxns(ctx context.Context, cutoff time.Time) (int64, error) {
	var n int64
	err := db.write(ctx, func(t *txn) error {
		res, err := t.exec(db.d.expireTxns, cutoff.UnixMilli())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: expire txns: %w", err)
	}
	return n, nil
}

// OutboundPDU is a queued event for a destination.
type OutboundPDU struct {
	Pos     int64
	EventID string
	JSON    []byte // the event as held (redacted form if redacted since)
}

// OutboundEDU is a queued EDU for a destination.
type OutboundEDU struct {
	Pos  int64
	JSON []byte
}

// Destination is the delivery state of one remote server.
type Destination struct {
	Name          string
	BackoffUntil  int64 // ms since the epoch; 0: not backing off
	Failures      int   // consecutive failures
	LastSuccessTS int64
	LastFailureTS int64
	LastError     string
	// TxnID is the transaction in flight ("" none); TxnBody its exact
	// body, resent under the same ID until answered.
	TxnID        string
	TxnBody      []byte
	TxnPositions []int64
	Pending      int // queued PDUs and EDUs
}

// EnqueueEDU queues an EDU (its JSON) for each destination.
func (db *DB) EnqueueEDU(ctx context.Context, destinations []string, edu []byte) error {
	err := db.write(ctx, func(t *txn) error {
		for _, d := range destinations {
			if _, err := t.exec(db.d.enqueueEDU, d, edu); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: enqueue EDU: %w", err)
	}
	return nil
}

// PendingDestinations returns the destinations with queued items or a
// transaction in flight, sorted.
func (db *DB) PendingDestinations(ctx context.Context) ([]string, error) {
	var out []string
	err := db.read(ctx, func(t *txn) error {
		var err error
		out, err = t.queryStrings(db.d.pendingDestinations)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: pending destinations: %w", err)
	}
	return out, nil
}

// PeekOutbound returns the oldest queued PDUs and EDUs of a destination,
// at most maxPDUs and maxEDUs, not counting those of the transaction in
// flight.
func (db *DB) PeekOutbound(ctx context.Context, destination string, maxPDUs, maxEDUs int) ([]OutboundPDU, []OutboundEDU, error) {
	var pdus []OutboundPDU
	var edus []OutboundEDU
	err := db.read(ctx, func(t *txn) error {
		rows, err := t.query(db.d.peekPDUs, destination, maxPDUs)
		if err != nil {
			return err
		}
		for rows.Next() {
			var p OutboundPDU
			if err := rows.Scan(&p.Pos, &p.EventID, &p.JSON); err != nil {
				rows.Close()
				return err
			}
			pdus = append(pdus, p)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = t.query(db.d.peekEDUs, destination, maxEDUs)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e OutboundEDU
			if err := rows.Scan(&e.Pos, &e.JSON); err != nil {
				return err
			}
			edus = append(edus, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, nil, fmt.Errorf("store: peek outbound: %w", err)
	}
	return pdus, edus, nil
}

// BeginTxn records the transaction about to be sent to a destination: its
// ID, exact body and the queue positions it carries. Until CompleteTxn,
// the same transaction is what must be resent. Like CompleteTxn and
// RecordFailure it is a relaxed write (see writeRelaxed): a power loss
// may forget it, which only makes the items go again.
func (db *DB) BeginTxn(ctx context.Context, destination, txnID string, body []byte, positions []int64) error {
	pos, err := json.Marshal(positions)
	if err != nil {
		return fmt.Errorf("store: begin txn: %w", err)
	}
	err = db.writeRelaxed(ctx, func(t *txn) error {
		_, err := t.exec(db.d.beginTxn, destination, txnID, body, string(pos))
		return err
	})
	if err != nil {
		return fmt.Errorf("store: begin txn: %w", err)
	}
	return nil
}

// CompleteTxn records that the destination answered the transaction in
// flight: its items leave the queue, failures reset, backoff ends.
func (db *DB) CompleteTxn(ctx context.Context, destination string) error {
	err := db.writeRelaxed(ctx, func(t *txn) error {
		if _, err := t.exec(db.d.deleteTxnItems, destination); err != nil {
			return err
		}
		_, err := t.exec(db.d.completeTxn, db.now(), destination)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: complete txn: %w", err)
	}
	return nil
}

// CompleteItems records that the destination answered a transaction that
// was never recorded in flight (its first attempt succeeded): the items
// at positions leave the queue, failures reset, backoff ends. A relaxed
// write, like CompleteTxn.
func (db *DB) CompleteItems(ctx context.Context, destination string, positions []int64) error {
	pos, err := json.Marshal(positions)
	if err != nil {
		return fmt.Errorf("store: complete items: %w", err)
	}
	err = db.writeRelaxed(ctx, func(t *txn) error {
		if _, err := t.exec(db.d.deleteItems, destination, string(pos)); err != nil {
			return err
		}
		_, err := t.exec(db.d.completeTxn, db.now(), destination)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: complete items: %w", err)
	}
	return nil
}

// RecordFailure records a failed attempt to reach a destination and the
// time until which to back off. The transaction in flight stays.
func (db *DB) RecordFailure(ctx context.Context, destination string, backoffUntil time.Time, reason string) error {
	err := db.writeRelaxed(ctx, func(t *txn) error {
		_, err := t.exec(db.d.recordFailure, destination, backoffUntil.UnixMilli(), db.now(), reason)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: record failure: %w", err)
	}
	return nil
}

// TrimOutboundPDUs drops all but the newest keep queued PDUs of a
// destination (not those of the transaction in flight), for catching up
// after a long outage; the destination pulls the gap itself. It returns
// how many were dropped.
func (db *DB) TrimOutboundPDUs(ctx context.Context, destination string, keep int) (int64, error) {
	var n int64
	err := db.write(ctx, func(t *txn) error {
		res, err := t.exec(db.d.trimPDUs, destination, keep)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: trim outbound: %w", err)
	}
	return n, nil
}

// Destination returns the delivery state of a destination; one never
// contacted has the zero state.
func (db *DB) Destination(ctx context.Context, name string) (Destination, error) {
	return db.destination(ctx, name, -1)
}

// DestinationUpTo is Destination with Pending counted up to limit only:
// a sender needs to know whether its queue is short or long, and
// counting a long queue in full would cost a scan of it per transaction.
func (db *DB) DestinationUpTo(ctx context.Context, name string, limit int) (Destination, error) {
	return db.destination(ctx, name, limit)
}

// destination reads a destination's state, counting its queue up to
// limit, or in full when limit is negative.
func (db *DB) destination(ctx context.Context, name string, limit int) (Destination, error) {
	query, count, args := db.d.destination, db.d.pendingCount, []any{name}
	if limit >= 0 {
		query, count, args = db.d.destinationUpTo, db.d.pendingCountUpTo, []any{name, limit}
	}
	var out Destination
	err := db.read(ctx, func(t *txn) error {
		rows, err := t.query(query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		if rows.Next() {
			out, err = scanDestination(rows)
			return err
		}
		out = Destination{Name: name}
		if err := rows.Err(); err != nil {
			return err
		}
		return t.queryRow(count, args...).Scan(&out.Pending)
	})
	if err != nil {
		return Destination{}, fmt.Errorf("store: destination: %w", err)
	}
	return out, nil
}

// Destinations returns the delivery state of every destination contacted,
// by name.
func (db *DB) Destinations(ctx context.Context) ([]Destination, error) {
	var out []Destination
	err := db.read(ctx, func(t *txn) error {
		rows, err := t.query(db.d.allDestinations)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			d, err := scanDestination(rows)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: destinations: %w", err)
	}
	return out, nil
}

func scanDestination(rows *sql.Rows) (Destination, error) {
	var d Destination
	var pos string
	if err := rows.Scan(&d.Name, &d.BackoffUntil, &d.Failures, &d.LastSuccessTS, &d.LastFailureTS, &d.LastError, &d.TxnID, &d.TxnBody, &pos, &d.Pending); err != nil {
		return d, err
	}
	if err := json.Unmarshal([]byte(pos), &d.TxnPositions); err != nil {
		return d, fmt.Errorf("destination %s: txn positions: %w", d.Name, err)
	}
	return d, nil
}
