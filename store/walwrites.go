//go:build linux && (amd64 || arm64)

package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// SQLite appends a transaction's pages to the write-ahead log one frame at
// a time, each frame in two pwrite calls: its 24-byte header, then the
// page. A transaction of 50 events is about a hundred frames, so two
// hundred system calls, which on our 2-CPU virtual machine were an eighth
// of the CPU time of ingesting a PDU and half the time of a commit.
//
// The unix VFS lets an application replace the system calls it makes
// (sqlite3_vfs.xSetSystemCall), which is how this file gathers the frames
// of a write-ahead log into one buffer and writes them with one pwrite:
//
//   - Only the frames a connection appends to its log are gathered: a
//     24-byte write (a frame's header) and the write right after it (its
//     page). Anything else written to the log (its own header, checksums
//     rewritten in place) first writes what is gathered, then goes through
//     as it came.
//   - A commit frame (its header names the database size) is written out
//     with what precedes it as soon as its page is gathered, before
//     SQLite syncs the log and before it publishes the commit to readers
//     in the log's index: a commit is on disk exactly when it would have
//     been, and a reader never looks for frames still gathered.
//   - Whatever else reads, sizes, truncates or closes the log writes what
//     is gathered first; so does a buffer reaching walBufferMax (a
//     transaction larger than the page cache spills frames before its
//     commit).
//
// Logs are known by the path they are opened under ("-wal").
//
// The replacements have the signatures the transpiled SQLite of
// modernc.org/sqlite calls its system calls with, and are handed to it as
// it represents function pointers (funcPointer): an upgrade of that
// module that changed either would show at once in
// TestWALWrites_CommitIsOnDiskWhenItReturns and the crash test.

// walBufferMax bounds the bytes gathered for one log.
const walBufferMax = 4 << 20

// walFrameHeaderSize is the size of a log frame's header.
const walFrameHeaderSize = 24

// walLog is the gathering state of one open log file descriptor.
type walLog struct {
	mu    sync.Mutex
	buf   []byte
	start int64 // file offset of buf[0]
	// pageNext: the last write gathered was a frame header, so the next
	// contiguous write is its page; commitNext: that header was a commit
	// frame's.
	pageNext, commitNext bool
}

var walLogs struct {
	sync.RWMutex
	byFD map[int32]*walLog
}

// walWriteCounts counts, for tests, the log writes SQLite made and the
// pwrite calls that wrote them.
var walWriteCounts struct {
	asked, written atomic.Int64
}

// The system calls replaced, as SQLite had them.
var sysOpen, sysClose, sysFstat, sysFtruncate, sysPread, sysPwrite uintptr

var walWritesInstalled struct {
	once sync.Once
	err  error
}

// installWALWrites replaces the unix VFS's system calls, once per process.
func installWALWrites() error {
	walWritesInstalled.once.Do(func() {
		walWritesInstalled.err = replaceSyscalls()
	})
	return walWritesInstalled.err
}

func replaceSyscalls() error {
	tls := libc.NewTLS()
	defer tls.Close()
	vfs := sqlite3.Xsqlite3_vfs_find(tls, 0)
	if vfs == 0 {
		return errors.New("store: no default SQLite VFS")
	}
	v := (*sqlite3.Tsqlite3_vfs)(ptrOf(vfs))
	if v.FiVersion < 3 || v.FxSetSystemCall == 0 || v.FxGetSystemCall == 0 {
		return errors.New("store: the SQLite VFS cannot replace system calls")
	}
	get := *(*func(*libc.TLS, uintptr, uintptr) uintptr)(unsafe.Pointer(&v.FxGetSystemCall))
	set := *(*func(*libc.TLS, uintptr, uintptr, uintptr) int32)(unsafe.Pointer(&v.FxSetSystemCall))
	replace := func(name string, saved *uintptr, fn any) error {
		cname, err := libc.CString(name)
		if err != nil {
			return err
		}
		defer libc.Xfree(tls, cname)
		if *saved = get(tls, vfs, cname); *saved == 0 {
			return fmt.Errorf("store: SQLite has no system call %q", name)
		}
		if rc := set(tls, vfs, cname, funcPointer(fn)); rc != sqlite3.SQLITE_OK {
			return fmt.Errorf("store: replacing system call %q: code %d", name, rc)
		}
		return nil
	}
	walLogs.byFD = make(map[int32]*walLog)
	for _, r := range []struct {
		name  string
		saved *uintptr
		fn    any
	}{
		{"open", &sysOpen, walOpen},
		{"close", &sysClose, walClose},
		{"fstat", &sysFstat, walFstat},
		{"ftruncate", &sysFtruncate, walFtruncate},
		{"pread", &sysPread, walPread},
		{"pwrite", &sysPwrite, walPwrite},
	} {
		if err := replace(r.name, r.saved, r.fn); err != nil {
			return err
		}
	}
	return nil
}

// funcPointer is a Go function as the transpiled SQLite calls function
// pointers: the function value's data word.
func funcPointer(fn any) uintptr {
	return (*[2]uintptr)(unsafe.Pointer(&fn))[1]
}

// ptrOf turns an address in SQLite's memory into a pointer.
func ptrOf(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

// logOf returns the gathering state of fd when it is a log; every read
// and write SQLite makes asks.
func logOf(fd int32) *walLog {
	walLogs.RLock()
	defer walLogs.RUnlock()
	return walLogs.byFD[fd]
}

func walOpen(tls *libc.TLS, path uintptr, flags, mode int32) int32 {
	fd := (*(*func(*libc.TLS, uintptr, int32, int32) int32)(unsafe.Pointer(&sysOpen)))(tls, path, flags, mode)
	if fd >= 0 && strings.HasSuffix(libc.GoString(path), "-wal") {
		walLogs.Lock()
		walLogs.byFD[fd] = &walLog{}
		walLogs.Unlock()
	}
	return fd
}

func walClose(tls *libc.TLS, fd int32) int32 {
	walLogs.Lock()
	l := walLogs.byFD[fd]
	delete(walLogs.byFD, fd)
	walLogs.Unlock()
	if l != nil {
		l.mu.Lock()
		// A failure here has nobody to report to that could act on it:
		// what is gathered is never a commit (a commit is written at
		// once), so nothing committed is lost.
		_ = l.flush(tls, fd)
		l.mu.Unlock()
	}
	return (*(*func(*libc.TLS, int32) int32)(unsafe.Pointer(&sysClose)))(tls, fd)
}

func walFstat(tls *libc.TLS, fd int32, buf uintptr) int32 {
	if !flushLog(tls, fd) {
		return -1
	}
	return (*(*func(*libc.TLS, int32, uintptr) int32)(unsafe.Pointer(&sysFstat)))(tls, fd, buf)
}

func walFtruncate(tls *libc.TLS, fd int32, size int64) int32 {
	if !flushLog(tls, fd) {
		return -1
	}
	return (*(*func(*libc.TLS, int32, int64) int32)(unsafe.Pointer(&sysFtruncate)))(tls, fd, size)
}

func walPread(tls *libc.TLS, fd int32, buf uintptr, n uint64, off int64) int64 {
	if !flushLog(tls, fd) {
		return -1
	}
	return realPread(tls, fd, buf, n, off)
}

// flushLog writes what is gathered for fd when it is a log; false (errno
// set) when that failed. SQLite uses a connection's files from one
// goroutine at a time, so nothing is gathered between this and the call
// that follows it.
func flushLog(tls *libc.TLS, fd int32) bool {
	l := logOf(fd)
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flush(tls, fd)
}

func realPread(tls *libc.TLS, fd int32, buf uintptr, n uint64, off int64) int64 {
	return (*(*func(*libc.TLS, int32, uintptr, uint64, int64) int64)(unsafe.Pointer(&sysPread)))(tls, fd, buf, n, off)
}

func realPwrite(tls *libc.TLS, fd int32, buf uintptr, n uint64, off int64) int64 {
	return (*(*func(*libc.TLS, int32, uintptr, uint64, int64) int64)(unsafe.Pointer(&sysPwrite)))(tls, fd, buf, n, off)
}

func walPwrite(tls *libc.TLS, fd int32, buf uintptr, n uint64, off int64) int64 {
	l := logOf(fd)
	if l == nil {
		return realPwrite(tls, fd, buf, n, off)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	walWriteCounts.asked.Add(1)
	isPage := l.pageNext
	isHeader := !isPage && n == walFrameHeaderSize
	if !isPage && !isHeader {
		if !l.flush(tls, fd) {
			return -1
		}
		walWriteCounts.written.Add(1)
		return realPwrite(tls, fd, buf, n, off)
	}
	if len(l.buf) > 0 && off != l.start+int64(len(l.buf)) || len(l.buf)+int(n) > walBufferMax {
		if !l.flush(tls, fd) {
			return -1
		}
		if isPage {
			// Its header is written: so is the page, at once.
			walWriteCounts.written.Add(1)
			return realPwrite(tls, fd, buf, n, off)
		}
	}
	if len(l.buf) == 0 {
		l.start = off
		if l.buf == nil {
			l.buf = make([]byte, 0, walBufferMax)
		}
	}
	data := unsafe.Slice((*byte)(ptrOf(buf)), n)
	l.buf = append(l.buf, data...)
	if isPage {
		commit := l.commitNext
		l.pageNext, l.commitNext = false, false
		if commit && !l.flush(tls, fd) {
			return -1
		}
		return int64(n)
	}
	// A frame header: bytes 4-7 hold the database size after a commit,
	// zero in any other frame.
	l.pageNext = true
	l.commitNext = binary.BigEndian.Uint32(data[4:8]) != 0
	return int64(n)
}

// flush writes what l has gathered; false (with errno set by the failed
// call) when it could not. l.mu is held. What was gathered is dropped
// either way: on failure SQLite fails the transaction it belongs to.
func (l *walLog) flush(tls *libc.TLS, fd int32) bool {
	if len(l.buf) == 0 {
		return true
	}
	buf, off := l.buf, l.start
	l.buf, l.pageNext, l.commitNext = l.buf[:0], false, false
	for len(buf) > 0 {
		walWriteCounts.written.Add(1)
		done := realPwrite(tls, fd, uintptr(unsafe.Pointer(&buf[0])), uint64(len(buf)), off)
		if done <= 0 {
			return false
		}
		buf, off = buf[done:], off+done
	}
	return true
}
