package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry"
	"github.com/ferry-matrix/ferry/config"
)

// restartEnv carries the data directory and server name (separated by a
// unit separator) of a Ferry a re-executed test binary opens instead of
// running the tests: BenchmarkJoinBigRoom -restart-rss measures the
// resident set of a Ferry restarted on the data of a big join.
const restartEnv = "FERRY_LOAD_RESTART"

// restartReport is what the restarted Ferry prints on its stdout.
type restartReport struct {
	StartSeconds float64 `json:"start_seconds"`
	IdleRSSBytes int64   `json:"idle_rss_bytes"`
}

// runRestarted opens Ferry (ferry.Start, as ferry serve does) on dir as
// name, with its listeners on free loopback ports, waits until its
// resident set has settled, prints a restartReport and closes it.
func runRestarted(spec string) int {
	dir, name, ok := strings.Cut(spec, "\x1f")
	if !ok {
		fmt.Fprintf(os.Stderr, "%s: want dir and server name\n", restartEnv)
		return 2
	}
	cfg := config.Default()
	cfg.ServerName = name
	cfg.DataDir = dir
	cfg.Federation.Listen = "127.0.0.1:0"
	cfg.Federation.VerifyTLS = false
	cfg.Federation.AllowPrivateAddresses = true
	cfg.Host.Listen = "127.0.0.1:0"
	start := time.Now()
	srv, err := ferry.Start(cfg, ferry.Options{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "restart on %s: %v\n", dir, err)
		return 1
	}
	started := time.Since(start).Seconds()
	idle, err := settledRSS(os.Getpid(), 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if cerr := srv.Close(ctx); cerr != nil {
		fmt.Fprintf(os.Stderr, "close: %v\n", cerr)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "idle RSS: %v\n", err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(restartReport{StartSeconds: started, IdleRSSBytes: idle}); err != nil {
		return 1
	}
	return 0
}

// settledRSS samples pid's VmRSS every second and returns it once three
// samples in a row are within 1% of each other (the process is idle), or
// the last sample after limit.
func settledRSS(pid int, limit time.Duration) (int64, error) {
	var samples []int64
	deadline := time.Now().Add(limit)
	for {
		time.Sleep(time.Second)
		rss, err := statusBytes(pid, "VmRSS:")
		if err != nil {
			return 0, err
		}
		samples = append(samples, rss)
		if n := len(samples); n >= 3 {
			lo, hi := min(samples[n-1], samples[n-2], samples[n-3]), max(samples[n-1], samples[n-2], samples[n-3])
			if float64(hi-lo) <= 0.01*float64(hi) {
				return rss, nil
			}
		}
		if time.Now().After(deadline) {
			return rss, nil
		}
	}
}

// statusBytes reads a "Name: N kB" line of /proc/pid/status, in bytes.
func statusBytes(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), field)
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("unexpected line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, err
		}
		return kb * 1024, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s line in /proc/%d/status", field, pid)
}

// restartedRSS runs a Ferry restarted on tg's data directory in a
// subprocess (while tg's own store stays open, as after a crash) and
// returns its report.
func restartedRSS(tb testing.TB, tg *target) restartReport {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), restartEnv+"="+filepath.Dir(tg.DB.Path())+"\x1f"+tg.Name)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("the restarted Ferry: %v", err)
	}
	var rep restartReport
	if err := json.Unmarshal(out, &rep); err != nil {
		tb.Fatalf("the restarted Ferry's report %q: %v", out, err)
	}
	return rep
}
