package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// subprocessEnv carries the ferry-load arguments a re-executed test
// binary runs instead of the tests (fields separated by a unit separator):
// the benchmark runs the resident in a process of its own, so the peak
// RSS it reports is the joining Ferry's, not the synthetic room's.
const subprocessEnv = "FERRY_LOAD_SUBPROCESS_ARGS"

func TestMain(m *testing.M) {
	if spec := os.Getenv(restartEnv); spec != "" {
		os.Exit(runRestarted(spec))
	}
	if args := os.Getenv(subprocessEnv); args != "" {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			// The parent closes our stdin when it is done with us.
			bufio.NewReader(os.Stdin).ReadByte()
			cancel()
		}()
		os.Exit(run(ctx, strings.Split(args, "\x1f"), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

var (
	benchMembers = flag.Int("members", 10000, "BenchmarkJoinBigRoom: members of the synthetic room")
	benchServers = flag.Int("resident-servers", 4, "BenchmarkJoinBigRoom: resident server names the members are spread over")
	benchVersion = flag.String("bigroom-version", "12", "BenchmarkJoinBigRoom: room version")
	benchRestart = flag.Bool("restart-rss", false, "BenchmarkJoinBigRoom: after the join, restart Ferry on its data directory in a subprocess and report its idle RSS")
	benchCache   = flag.String("bigroom-cache", "", "BenchmarkJoinBigRoom: the resident's --cache file (a 100,000-member room is built once)")
)

// BenchmarkJoinBigRoom times a real Ferry's join (make_join, send_join
// with the full state, verification of every event, persistence) of a
// synthetic room of -members members served by `ferry-load bigroom` in a
// subprocess, and reports the test process's peak RSS during the join
// (VmHWM, reset before each join). Run it by hand, once:
//
//	go test ./cmd/ferry-load -run '^$' -bench '^BenchmarkJoinBigRoom$' -benchtime 1x -members 10000
//
// With -restart-rss it then opens Ferry (ferry.Start) on the joined data
// directory in another subprocess and reports that process's resident set
// once idle; -bigroom-cache FILE keeps the built room between runs:
//
//	go test ./cmd/ferry-load -run '^$' -bench '^BenchmarkJoinBigRoom$' -benchtime 1x -members 100000 -bigroom-cache /tmp/bigroom100k.cache -restart-rss
func BenchmarkJoinBigRoom(b *testing.B) {
	ready := startBigRoomResident(b, *benchCache)

	var peak int64
	var seconds, cpu float64
	var last *target
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		tg := startTarget(b)
		last = tg
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
			b.Logf("cannot reset the peak RSS (%v): it covers the whole run", err)
		}
		cpuBefore := selfCPU(b)
		b.StartTimer()
		start := time.Now()
		_, err := tg.Engine.JoinRoom(ctx, ready.RoomID, fmt.Sprintf("@joiner%d:%s", i, tg.Name), []string{ready.Servers[0]})
		seconds += time.Since(start).Seconds()
		b.StopTimer()
		cpu += selfCPU(b) - cpuBefore
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		peak = max(peak, joinedPeak(b, tg, ready))
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(seconds/float64(b.N), "s/join")
	b.ReportMetric(cpu/float64(b.N), "CPU-s/join")
	b.ReportMetric(float64(peak)/1e6, "peak-RSS-MB")
	b.ReportMetric(float64(ready.Members), "members")
	if *benchRestart {
		rep := restartedRSS(b, last)
		b.Logf("Ferry restarted on the joined data directory in %.2f s", rep.StartSeconds)
		b.ReportMetric(float64(rep.IdleRSSBytes)/1e6, "idle-RSS-after-restart-MB")
	}
}

// selfCPU returns the user plus system CPU time this process has used, in
// seconds (the resident runs in another process, so this is the joining
// Ferry's, and the test's, own work).
func selfCPU(b *testing.B) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// withCache adds --cache file to the resident's arguments when file is
// not empty.
func withCache(args []string, file string) []string {
	if file == "" {
		return args
	}
	return append(args, "--cache", file)
}

// startBigRoomResident runs `ferry-load bigroom` of the benchmark flags'
// shape (cached in cache when not "") in a subprocess, so that the peak
// RSS the benchmarks read is the joining process's alone, and returns the
// room it serves; the subprocess ends with the benchmark.
func startBigRoomResident(b *testing.B, cache string) bigRoomReady {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), subprocessEnv+"="+strings.Join(withCache([]string{
		"bigroom", "--json", "--insecure", "--members", fmt.Sprint(*benchMembers),
		"--servers", fmt.Sprint(*benchServers), "--room-version", *benchVersion,
	}, cache), "\x1f"))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	var ready bigRoomReady
	if err := json.NewDecoder(stdout).Decode(&ready); err != nil {
		b.Fatalf("the resident's first line: %v", err)
	}
	b.Logf("room %s: %d members, %d events, built and signed in %.2f s by the resident", ready.RoomID, ready.Members, ready.Events, ready.BuildSeconds)
	return ready
}

// joinedPeak checks that the target holds every member of the resident's
// room and its own user, and returns this process's peak resident set.
func joinedPeak(b *testing.B, tg *target, ready bigRoomReady) int64 {
	b.Helper()
	hwm, err := peakRSS(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	members, err := tg.DB.Members(context.Background(), ready.RoomID, "join")
	if err != nil {
		b.Fatal(err)
	}
	if len(members) < ready.Members+1 {
		b.Fatalf("the target holds %d joined members, want at least %d", len(members), ready.Members+1)
	}
	return hwm
}
