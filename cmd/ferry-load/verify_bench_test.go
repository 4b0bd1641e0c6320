package main

import (
	"crypto/ed25519"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
)

// keyTable is a rooms.KeyLookup over fixed keys.
type keyTable map[string]ed25519.PublicKey // "server key-ID" -> key

func (k keyTable) VerifyKey(server, keyID string, _ int64) (ed25519.PublicKey, error) {
	if pub, ok := k[server+" "+keyID]; ok {
		return pub, nil
	}
	return nil, fmt.Errorf("no key %s of %s", keyID, server)
}

// BenchmarkVerifyJoinAnswer measures what a joining server's check of a
// send_join answer costs (parse every event, then its signatures and
// content hash: rooms.ParseEvent and rooms.CheckEvent, as
// homeserver.(*Engine).verifyJoinResponse does), one event after the
// other and on every CPU, for a synthetic room of -members members. It
// shows what parallel verification would save in the join.
//
//	go test ./cmd/ferry-load -run '^$' -bench VerifyJoinAnswer -benchtime 1x -members 10000
func BenchmarkVerifyJoinAnswer(b *testing.B) {
	v, err := rooms.LookupVersion(*benchVersion)
	if err != nil {
		b.Fatal(err)
	}
	cert, err := selfSignedCert("127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	table := keyTable{}
	var signers []rooms.SigningKey
	for range *benchServers {
		s, err := startFakeServer("127.0.0.1", cert)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(s.Close)
		signers = append(signers, s.Signer)
		table[s.Name+" "+s.Key.KeyID()] = s.Key.Public()
	}
	room, err := buildRoom(roomSpec{Version: v, Members: *benchMembers, Admins: 5, Moderators: 10, ProfileChanges: 0.1, Name: "n", Topic: "t"}, signers, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	raws := make([][]byte, len(room.Events))
	for i, ev := range room.Events {
		raws[i] = ev.JSON()
	}
	check := func(raw []byte) {
		ev, err := rooms.ParseEvent(v, raw)
		if err == nil {
			_, err = rooms.CheckEvent(ev, table)
		}
		if err != nil {
			b.Error(err)
		}
	}
	var serial, parallel time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for _, raw := range raws {
			check(raw)
		}
		serial += time.Since(start)

		start = time.Now()
		next := make(chan []byte, 256)
		var wg sync.WaitGroup
		for range runtime.GOMAXPROCS(0) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for raw := range next {
					check(raw)
				}
			}()
		}
		for _, raw := range raws {
			next <- raw
		}
		close(next)
		wg.Wait()
		parallel += time.Since(start)
	}
	n := float64(b.N)
	b.ReportMetric(serial.Seconds()/n, "serial-s")
	b.ReportMetric(parallel.Seconds()/n, "all-CPUs-s")
	b.ReportMetric(float64(len(raws)), "events")
}
