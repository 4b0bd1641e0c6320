package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
)

// bigRoomConfig is what `ferry-load bigroom` is asked to do.
type bigRoomConfig struct {
	Spec     roomSpec
	Servers  int    // resident server names (listeners)
	Bind     string // host the listeners bind to
	Insecure bool   // accept self-signed certificates when fetching joiners' keys
	// Cache, when set, is a file the built room is kept in: read back
	// (and served on the same ports) when it exists, written otherwise.
	Cache string

	HostAPI, HostToken, User string // trigger a join through Ferry's host API
	TargetPID                int
	Wait                     bool // keep serving after the measured join
}

// bigRoomReady is printed once the room is served.
type bigRoomReady struct {
	RoomID       string   `json:"room_id"`
	RoomVersion  string   `json:"room_version"`
	Members      int      `json:"members"`
	Events       int      `json:"events"`
	Servers      []string `json:"servers"`
	Alias        string   `json:"alias"`
	BuildSeconds float64  `json:"build_seconds"`
	// FromCache says the room was read from the cache file, not built.
	FromCache bool `json:"from_cache,omitempty"`
}

// bigRoomJoin is the measured join through the host API.
type bigRoomJoin struct {
	RoomID             string  `json:"room_id"`
	User               string  `json:"user"`
	EventID            string  `json:"event_id"`
	Seconds            float64 `json:"seconds"`
	Members            int     `json:"members"`
	TargetPeakRSSBytes int64   `json:"target_peak_rss_bytes,omitempty"`
	// TargetPeakJoinOnly says the peak covers this join only (the
	// target's VmHWM was reset before it), not the process's lifetime.
	TargetPeakJoinOnly bool `json:"target_peak_is_join_only,omitempty"`
	// TargetCPUSeconds is the CPU time (user and system) the target
	// process used during the join: on a shared machine it varies less
	// than the wall time.
	TargetCPUSeconds float64 `json:"target_cpu_seconds,omitempty"`
}

// bigRoomServe is a built room served by its resident servers.
type bigRoomServe struct {
	Ready    bigRoomReady
	Resident *resident
	servers  []*fakeServer
}

// Close stops the resident servers.
func (b *bigRoomServe) Close() {
	for _, s := range b.servers {
		s.Close()
	}
}

// serveBigRoom starts the resident servers, builds the room with members
// spread over them and serves it.
func serveBigRoom(cfg bigRoomConfig) (*bigRoomServe, error) {
	if cfg.Servers < 1 {
		return nil, errors.New("--servers must be at least 1")
	}
	host, _, _ := strings.Cut(cfg.Bind, ":")
	cert, err := selfSignedCert(host)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	peers := newPeerKeys(httpsClient(cfg.Insecure, 4))
	out := &bigRoomServe{}
	start := time.Now()
	var room *builtRoom
	if cfg.Cache != "" {
		cached, err := loadRoomCache(cfg.Cache, cfg.Spec, cfg.Servers)
		switch {
		case err == nil:
			for i, cs := range cached.servers {
				s, err := startFakeServerWithKey(cs.Name, cert, cached.keys[i])
				if err == nil && s.Name != cs.Name {
					s.Close()
					err = fmt.Errorf("listening as %s, not %s", s.Name, cs.Name)
				}
				if err != nil {
					out.Close()
					return nil, fmt.Errorf("serve the cached room as %s (its events name that server): %w", cs.Name, err)
				}
				out.servers = append(out.servers, s)
			}
			room = cached.room
			out.Ready.FromCache = true
		case !errors.Is(err, os.ErrNotExist):
			return nil, err
		}
	}
	if room == nil {
		var signers []rooms.SigningKey
		for range cfg.Servers {
			s, err := startFakeServer(cfg.Bind, cert)
			if err != nil {
				out.Close()
				return nil, err
			}
			out.servers = append(out.servers, s)
			signers = append(signers, s.Signer)
		}
		var err error
		if room, err = buildRoom(cfg.Spec, signers, start); err != nil {
			out.Close()
			return nil, err
		}
		if cfg.Cache != "" {
			if err := saveRoomCache(cfg.Cache, cfg.Spec, room, out.servers); err != nil {
				out.Close()
				return nil, err
			}
		}
	}
	built := time.Since(start)
	out.Resident = newResident(cfg.Spec.Version, room, peers)
	for _, s := range out.servers {
		out.Resident.residents = append(out.Resident.residents, s.Name)
		out.Resident.routes(s)
	}
	out.Ready.RoomID, out.Ready.RoomVersion = room.RoomID, cfg.Spec.Version.ID
	out.Ready.Members, out.Ready.Events, out.Ready.BuildSeconds = out.Resident.joinedMembers(), len(room.Events), built.Seconds()
	for _, s := range out.servers {
		out.Ready.Servers = append(out.Ready.Servers, s.Name)
	}
	out.Ready.Alias = aliasOf(out.Ready.Servers[0])
	return out, nil
}

func runBigRoom(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ferry-load bigroom", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg bigRoomConfig
	version := fs.String("room-version", "12", "room version of the synthetic room (10 or 12)")
	fs.IntVar(&cfg.Spec.Members, "members", 1000, "joined members, the creator included")
	fs.IntVar(&cfg.Servers, "servers", 4, "resident server names (one TLS listener each, all served by this process); members are spread over them")
	fs.IntVar(&cfg.Spec.Admins, "admins", 5, "members with power level 100")
	fs.IntVar(&cfg.Spec.Moderators, "moderators", 10, "members with power level 50")
	fs.Float64Var(&cfg.Spec.ProfileChanges, "profile-changes", 0.1, "fraction of members who change displayname after joining (their first join stays in the auth chain only)")
	fs.IntVar(&cfg.Spec.Messages, "messages", 20, "messages after the joins")
	fs.StringVar(&cfg.Bind, "bind", "127.0.0.1", "host the resident listeners bind to (server names are host:port)")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "skip TLS verification when fetching the joining server's keys (self-signed targets)")
	fs.StringVar(&cfg.HostAPI, "join-via-host-api", "", "Ferry host API base URL (http://host:port): ask the target to join --user and time it")
	fs.StringVar(&cfg.HostToken, "host-token", os.Getenv("FERRY_HOST_TOKEN"), "host API bearer token (default $FERRY_HOST_TOKEN)")
	fs.StringVar(&cfg.User, "user", "", "local user of the target that joins (with --join-via-host-api)")
	fs.IntVar(&cfg.TargetPID, "target-pid", 0, "PID of the target process: report its peak RSS (VmHWM) after the join")
	fs.StringVar(&cfg.Cache, "cache", "", "file to keep the built room in: read back when it exists (the room is then served on the same ports, which must be free), written after a build otherwise")
	fs.BoolVar(&cfg.Wait, "wait", false, "with --join-via-host-api, keep serving after the join until interrupted")
	jsonOut := fs.Bool("json", false, "print JSON lines instead of text")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	v, err := rooms.LookupVersion(*version)
	if err != nil {
		fmt.Fprintf(stderr, "ferry-load bigroom: %v\n", err)
		return 2
	}
	cfg.Spec.Version = v
	cfg.Spec.Name = fmt.Sprintf("Synthetic room of %d members", cfg.Spec.Members)
	cfg.Spec.Topic = "Generated by ferry-load bigroom"
	if cfg.HostAPI != "" && cfg.User == "" {
		fmt.Fprintln(stderr, "ferry-load bigroom: --join-via-host-api needs --user")
		return 2
	}

	b, err := serveBigRoom(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "ferry-load bigroom: %v\n", err)
		return 1
	}
	defer b.Close()
	if *jsonOut {
		json.NewEncoder(stdout).Encode(b.Ready)
	} else {
		how := "built and signed"
		if b.Ready.FromCache {
			how = "read from " + cfg.Cache
		}
		fmt.Fprintf(stdout, "room %s (version %s): %d members, %d events, %s in %.2f s\n",
			b.Ready.RoomID, b.Ready.RoomVersion, b.Ready.Members, b.Ready.Events, how, b.Ready.BuildSeconds)
		fmt.Fprintf(stdout, "resident servers: %s\n", strings.Join(b.Ready.Servers, " "))
		fmt.Fprintf(stdout, "join through: %s (or by alias %s)\n", b.Ready.Servers[0], b.Ready.Alias)
	}
	if cfg.HostAPI == "" {
		if !*jsonOut {
			fmt.Fprintln(stdout, "serving; interrupt to stop")
		}
		<-ctx.Done()
		return 0
	}
	res, err := joinViaHostAPI(ctx, cfg, b)
	if err != nil {
		fmt.Fprintf(stderr, "ferry-load bigroom: %v\n", err)
		return 1
	}
	if *jsonOut {
		json.NewEncoder(stdout).Encode(res)
	} else {
		fmt.Fprintf(stdout, "joined %s as %s in %.2f s (%d members now)\n", res.RoomID, res.User, res.Seconds, res.Members)
		if res.TargetPeakRSSBytes > 0 {
			scope := "since the target started"
			if res.TargetPeakJoinOnly {
				scope = "during the join"
			}
			fmt.Fprintf(stdout, "target peak RSS (VmHWM) %s: %.1f MB; target CPU time during the join: %.2f s\n",
				scope, float64(res.TargetPeakRSSBytes)/1e6, res.TargetCPUSeconds)
		}
	}
	if cfg.Wait {
		<-ctx.Done()
	}
	return 0
}

// joinViaHostAPI registers the user on the target, asks the target to
// join it through the first resident and times the answer.
func joinViaHostAPI(ctx context.Context, cfg bigRoomConfig, b *bigRoomServe) (bigRoomJoin, error) {
	h := newHostAPI(cfg.HostAPI, cfg.HostToken)
	if err := h.putUser(ctx, cfg.User); err != nil {
		return bigRoomJoin{}, err
	}
	var res bigRoomJoin
	var cpuBefore float64
	if cfg.TargetPID > 0 {
		// Linux resets a process's VmHWM to its current RSS when "5" is
		// written to its clear_refs (our own processes only).
		res.TargetPeakJoinOnly = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", cfg.TargetPID), []byte("5"), 0) == nil
		var err error
		if cpuBefore, err = processCPU(cfg.TargetPID); err != nil {
			return bigRoomJoin{}, err
		}
	}
	start := time.Now()
	eventID, err := h.join(ctx, b.Ready.RoomID, cfg.User, []string{b.Ready.Servers[0]})
	if err != nil {
		return bigRoomJoin{}, err
	}
	res.Seconds = time.Since(start).Seconds()
	res.RoomID, res.User, res.EventID, res.Members = b.Ready.RoomID, cfg.User, eventID, b.Resident.joinedMembers()
	if cfg.TargetPID > 0 {
		hwm, err := peakRSS(cfg.TargetPID)
		if err != nil {
			return res, err
		}
		res.TargetPeakRSSBytes = hwm
		cpu, err := processCPU(cfg.TargetPID)
		if err != nil {
			return res, err
		}
		res.TargetCPUSeconds = cpu - cpuBefore
	}
	return res, nil
}

// clockTicks is Linux's USER_HZ, the unit of the CPU times in
// /proc/PID/stat (100 on every architecture Go supports).
const clockTicks = 100

// processCPU returns the user plus system CPU time a process has used, in
// seconds, from /proc/PID/stat.
func processCPU(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("process CPU: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15, the 12th and 13th after it.
	_, rest, ok := strings.Cut(string(raw), ") ")
	fields := strings.Fields(rest)
	if !ok || len(fields) < 13 {
		return 0, fmt.Errorf("process CPU: unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("process CPU: unexpected /proc/%d/stat", pid)
	}
	return float64(utime+stime) / clockTicks, nil
}

// peakRSS reads a process's peak resident set size (VmHWM) from
// /proc/PID/status, in bytes.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("peak RSS: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("peak RSS: unexpected VmHWM line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("peak RSS: %w", err)
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("peak RSS: %w", err)
	}
	return 0, fmt.Errorf("peak RSS: no VmHWM in /proc/%d/status", pid)
}
