package store

import "fmt"

// rowChunk is how many rows one multi-row INSERT carries at most.
const rowChunk = 256

// pow2Chunk returns the largest power of two ≤ min(n, rowChunk). Writing
// n rows in such chunks needs at most log2(rowChunk)+1 statement shapes
// per table, all of which stay prepared.
func pow2Chunk(n int) int {
	c := 1
	for c*2 <= n && c*2 <= rowChunk {
		c *= 2
	}
	return c
}

// rowBuffer collects rows for one table and writes them with multi-row
// INSERTs: a bulk join writes hundreds of thousands of edge and state
// rows, and one statement per row would cost most of the time.
type rowBuffer struct {
	ins  insertShape
	args []any
}

// insertShape is a multi-row INSERT: the dialect turns it into SQL text.
type insertShape struct {
	table    string
	columns  []string
	onClause string // what follows VALUES (conflict handling), may be empty
	// deletes makes the statement delete the rows listed instead.
	deletes bool
	// impliedKey: the first column is the table's integer key, numbered
	// by the store as the database would number the rows (one past the
	// largest, in order). The statement leaves it out and lets the
	// database number them, and the flush checks that the numbers agree.
	// An explicit key would make SQLite keep a statement journal (a copy
	// of every page the statement changes) in case a key is not an
	// integer.
	impliedKey bool
}

func newRowBuffer(s insertShape) *rowBuffer {
	return &rowBuffer{ins: s}
}

// add buffers one row (len(vals) == number of columns) and writes the
// buffer when it holds rowChunk rows.
func (w *wtx) add(b *rowBuffer, vals ...any) error {
	b.args = append(b.args, vals...)
	if len(b.args) >= rowChunk*len(b.ins.columns) {
		return w.flush(b)
	}
	return nil
}

func (w *wtx) flush(b *rowBuffer) error {
	if len(b.args) == 0 {
		return nil
	}
	cols := len(b.ins.columns)
	for args := b.args; len(args) > 0; {
		n := pow2Chunk(len(args) / cols)
		if b.ins.impliedKey {
			if err := w.insertNumbered(b, args[:n*cols]); err != nil {
				return err
			}
		} else if _, err := w.t.exec(w.db.d.multiInsert(b.ins, n), args[:n*cols]...); err != nil {
			return fmt.Errorf("insert into %s: %w", b.ins.table, err)
		}
		args = args[n*cols:]
	}
	b.args = b.args[:0]
	return nil
}

// insertNumbered inserts rows of an impliedKey shape without their keys
// and checks that the database numbered them as the store did.
func (w *wtx) insertNumbered(b *rowBuffer, rows []any) error {
	cols := len(b.ins.columns)
	n := len(rows) / cols
	vals := w.numberedArgs[:0]
	for r := 0; r < n; r++ {
		vals = append(vals, rows[r*cols+1:(r+1)*cols]...)
	}
	res, err := w.t.exec(w.db.d.multiInsert(b.ins, n), vals...)
	clear(vals) // the rows' JSON is not kept alive by the reused slice
	w.numberedArgs = vals[:0]
	if err != nil {
		return fmt.Errorf("insert into %s: %w", b.ins.table, err)
	}
	last, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("insert into %s: %w", b.ins.table, err)
	}
	if want, ok := rows[(n-1)*cols].(int64); !ok || last != want {
		return fmt.Errorf("insert into %s: the database numbered the last row %d, the store %v", b.ins.table, last, rows[(n-1)*cols])
	}
	return nil
}

// flushAll writes every buffered row; readers of those tables inside the
// transaction call it first.
func (w *wtx) flushAll() error {
	for _, b := range w.buffers() {
		if err := w.flush(b); err != nil {
			return err
		}
	}
	return nil
}

func (w *wtx) buffers() []*rowBuffer {
	return []*rowBuffer{w.newEvents, w.prevEdges, w.authEdges, w.entries, w.current, w.outbound, w.addedExts, w.droppedExts, w.hostLog}
}
