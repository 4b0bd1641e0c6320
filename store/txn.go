package store

import (
	"context"
	"database/sql"
	"sync"
)

// stmtPool keeps statements prepared once per connection pool: parsing
// SQL costs more than running most of the store's statements.
type stmtPool struct {
	db *sql.DB
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func newStmtPool(db *sql.DB) *stmtPool {
	return &stmtPool{db: db, m: make(map[string]*sql.Stmt)}
}

func (p *stmtPool) get(q string) *sql.Stmt {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[q]
}

// warm prepares statements a transaction had to prepare for itself. It
// runs after the transaction ends: preparing on the pool takes a
// connection, and the writer has only the one the transaction held.
func (p *stmtPool) warm(ctx context.Context, qs []string) {
	for _, q := range qs {
		p.mu.Lock()
		_, ok := p.m[q]
		closed := p.m == nil
		p.mu.Unlock()
		if ok || closed {
			continue
		}
		st, err := p.db.PrepareContext(ctx, q)
		if err != nil {
			continue // the next transaction prepares it for itself again
		}
		p.mu.Lock()
		if _, ok := p.m[q]; ok || p.m == nil {
			st.Close()
		} else {
			p.m[q] = st
		}
		p.mu.Unlock()
	}
}

func (p *stmtPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.m {
		st.Close()
	}
	p.m = nil
}

// txn is one transaction with its context and prepared statements.
// Helpers that run inside a transaction take a *txn.
type txn struct {
	ctx   context.Context
	tx    *sql.Tx
	pool  *stmtPool
	stmts map[string]*sql.Stmt
	// unpooled lists statements prepared for this transaction only, to
	// prepare on the pool once it ends.
	unpooled []string
	// lastNID is the highest event number written so far by the event
	// writes of a grouped commit, 0 until one has run: the next one
	// starts from it instead of asking the table.
	lastNID int64
	// shared, in a merged group commit, is the row buffers every event
	// write of the group adds to, written once before the commit.
	shared *writeBuffers
	// extWrites counts, per room, the event writes of this transaction
	// that looked at its forward extremities.
	extWrites map[int64]int
	// hostPos is the host log's last position as this transaction leaves
	// it, once hostPosKnown (merged groups number their entries).
	hostPos      int64
	hostPosKnown bool
}

func (t *txn) stmt(q string) (*sql.Stmt, error) {
	if st, ok := t.stmts[q]; ok {
		return st, nil
	}
	var st *sql.Stmt
	if ps := t.pool.get(q); ps != nil {
		st = t.tx.StmtContext(t.ctx, ps)
	} else {
		var err error
		if st, err = t.tx.PrepareContext(t.ctx, q); err != nil {
			return nil, err
		}
		t.unpooled = append(t.unpooled, q)
	}
	t.stmts[q] = st
	return st, nil
}

func (t *txn) query(q string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(t.ctx, args...)
}

// row is a *sql.Row or the error of preparing its statement.
type row struct {
	r   *sql.Row
	err error
}

func (r row) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	return r.r.Scan(dest...)
}

func (t *txn) queryRow(q string, args ...any) row {
	st, err := t.stmt(q)
	if err != nil {
		return row{err: err}
	}
	return row{r: st.QueryRowContext(t.ctx, args...)}
}

func (t *txn) exec(q string, args ...any) (sql.Result, error) {
	st, err := t.stmt(q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(t.ctx, args...)
}

// queryStrings runs a query whose rows are one text column and returns
// them in order.
func (t *txn) queryStrings(q string, args ...any) ([]string, error) {
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
