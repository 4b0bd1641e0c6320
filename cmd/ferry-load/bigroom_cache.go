package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/ferry-matrix/ferry/keys"
	"github.com/ferry-matrix/ferry/rooms"
)

// A room cache keeps a built room so that a big one (100,000 members take
// about 20 s to sign) is built once. The file is JSON lines: a header
// naming the room, its parameters and its resident servers (name and
// signing key in the key file format), then one line per event, "<event
// ID>\t<canonical JSON>", in DAG order. As the events name the servers by
// host:port, a cached room must be served on the same ports again.

// cacheFormat is the version of the cache file layout.
const cacheFormat = 1

type cacheHeader struct {
	Format         int           `json:"format"`
	RoomVersion    string        `json:"room_version"`
	RoomID         string        `json:"room_id"`
	Members        int           `json:"members"`
	Admins         int           `json:"admins"`
	Moderators     int           `json:"moderators"`
	ProfileChanges float64       `json:"profile_changes"`
	Messages       int           `json:"messages"`
	Servers        []cacheServer `json:"servers"`
	Events         int           `json:"events"`
}

type cacheServer struct {
	Name string `json:"name"`
	Key  string `json:"key"` // "ed25519 <version> <seed>"
}

func headerFor(spec roomSpec) cacheHeader {
	return cacheHeader{Format: cacheFormat, RoomVersion: spec.Version.ID, Members: spec.Members, Admins: spec.Admins,
		Moderators: spec.Moderators, ProfileChanges: spec.ProfileChanges, Messages: spec.Messages}
}

// saveRoomCache writes room and its servers to path (through a temporary
// file, so a crash leaves no half-written cache).
func saveRoomCache(path string, spec roomSpec, room *builtRoom, servers []*fakeServer) error {
	h := headerFor(spec)
	h.RoomID, h.Events = room.RoomID, len(room.Events)
	for _, s := range servers {
		h.Servers = append(h.Servers, cacheServer{Name: s.Name, Key: strings.TrimSpace(string(keys.FormatKeyFile(s.Key)))})
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ferry-load-cache-*")
	if err != nil {
		return fmt.Errorf("room cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	head, err := json.Marshal(h)
	if err != nil {
		tmp.Close()
		return fmt.Errorf("room cache: %w", err)
	}
	w.Write(head)
	w.WriteByte('\n')
	for _, ev := range room.Events {
		w.WriteString(ev.EventID())
		w.WriteByte('\t')
		w.Write(ev.JSON())
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("room cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("room cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("room cache: %w", err)
	}
	return nil
}

// cachedRoom is a room read back from a cache: its events and the keys
// of the servers to serve it as.
type cachedRoom struct {
	room    *builtRoom
	servers []cacheServer
	keys    []keys.PrivateKey
}

// loadRoomCache reads path. It refuses a cache built with other room
// parameters than spec's, so a flag change is never silently ignored.
func loadRoomCache(path string, spec roomSpec, servers int) (*cachedRoom, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), rooms.MaxPDUBytes*2)
	if !sc.Scan() {
		return nil, fmt.Errorf("room cache %s: empty", path)
	}
	var h cacheHeader
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
		return nil, fmt.Errorf("room cache %s: header: %w", path, err)
	}
	want := headerFor(spec)
	if h.Format != want.Format || h.RoomVersion != want.RoomVersion || h.Members != want.Members || h.Admins != want.Admins ||
		h.Moderators != want.Moderators || h.ProfileChanges != want.ProfileChanges || h.Messages != want.Messages || len(h.Servers) != servers {
		return nil, fmt.Errorf("room cache %s holds a room of %d members over %d servers (version %s, admins %d, moderators %d, profile changes %g, messages %d), not what the flags ask for; delete it or change the flags",
			path, h.Members, len(h.Servers), h.RoomVersion, h.Admins, h.Moderators, h.ProfileChanges, h.Messages)
	}
	c := &cachedRoom{servers: h.Servers}
	for _, s := range h.Servers {
		ks, err := keys.ParseKeyFile([]byte(s.Key))
		if err != nil || len(ks) != 1 {
			return nil, fmt.Errorf("room cache %s: key of %s: %v", path, s.Name, err)
		}
		c.keys = append(c.keys, ks[0])
	}
	var lines [][]byte
	for sc.Scan() {
		lines = append(lines, append([]byte(nil), sc.Bytes()...))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("room cache %s: %w", path, err)
	}
	if len(lines) != h.Events {
		return nil, fmt.Errorf("room cache %s: %d events, the header says %d", path, len(lines), h.Events)
	}
	events, err := parseCachedEvents(spec.Version, lines)
	if err != nil {
		return nil, fmt.Errorf("room cache %s: %w", path, err)
	}
	c.room = &builtRoom{RoomID: h.RoomID, Events: events}
	return c, nil
}

// parseCachedEvents reads "<id>\t<json>" lines on every CPU; the IDs were
// computed when the room was built.
func parseCachedEvents(v rooms.Version, lines [][]byte) ([]*rooms.Event, error) {
	out := make([]*rooms.Event, len(lines))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	next := make(chan int, 256)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id, raw, ok := strings.Cut(string(lines[i]), "\t")
				var err error
				if !ok {
					err = errors.New("malformed line")
				} else {
					out[i], err = rooms.ParseEventTrusted(v, []byte(raw), id)
				}
				if err != nil {
					mu.Lock()
					firstErr = fmt.Errorf("event line %d: %w", i+2, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := range lines {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}
