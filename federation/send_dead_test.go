package federation

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ferry-matrix/ferry/rooms"
)

// BenchmarkDelivery_DeadServers measures how long an event takes to reach
// ten healthy receivers over loopback TLS, with nobody else in the room
// and with three more servers in it that cannot be reached: one refuses
// connections, one fails the TLS handshake (its certificate names another
// server), one accepts connections and never answers. It reports the
// median and the 99th percentile of the time from sending an event until
// the last healthy receiver has it.
//
//	go test ./federation -run '^$' -bench DeadServers -benchtime 200x
func BenchmarkDelivery_DeadServers(b *testing.B) {
	for _, dead := range []bool{false, true} {
		name := "none-dead"
		if dead {
			name = "three-dead"
		}
		b.Run(name, func(b *testing.B) {
			const healthy = 10
			arrived := make(chan int, 64)
			w := newIdleDeliveryWorld(b, healthy, arrived)
			if dead {
				w.addDeadServers(b)
			}
			w.start(b)
			var took []time.Duration
			for i := 0; b.Loop(); i++ {
				took = append(took, w.sendAwaited(b, fmt.Sprintf("latency-%d", i), arrived, healthy))
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "ms-p50-to-healthy")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "ms-p99-to-healthy")
		})
	}
}

// addDeadServers joins three servers to the room and then makes each
// unreachable in its own way: connection refused, a TLS handshake that
// fails, and a server that accepts and never answers.
func (w *deliveryWorld) addDeadServers(tb testing.TB) {
	tb.Helper()
	pki := w.pki
	refused := closedPort(tb)
	wrongCert := httptest.NewUnstartedServer(http.NotFoundHandler())
	wrongCert.TLS = TLSConfig(pki.issue(tb, "someone-else.test"))
	wrongCert.Config.ErrorLog = log.New(io.Discard, "", 0) // each refused handshake would be logged
	wrongCert.StartTLS()
	tb.Cleanup(wrongCert.Close)
	silent := silentListener(tb)
	addrs := []netip.AddrPort{refused, netip.MustParseAddrPort(wrongCert.Listener.Addr().String()), silent}
	for i, addr := range addrs {
		name := fmt.Sprintf("dead%d.test", i)
		rn := newRoomNode(tb, pki, name, byte(200+i))
		rn.start(tb, pki, newScriptedRooms())
		linkNodes(w.ferry.roomNode, rn)
		room := newRemoteRoom(tb, rn, w.ferry, w.roomID)
		user := "@u:" + name
		join := room.build(eventSpec{typ: "m.room.member", stateKey: rooms.StringPtr(user), sender: user, content: map[string]any{"membership": "join"}})
		if res := room.send("join", join); res[join.EventID()] != "" {
			tb.Fatalf("join of %s: %s", user, res[join.EventID()])
		}
		// Ferry has its keys now; from here on the server is gone.
		rn.ts.Close()
		w.ferry.res.mapHost(name, 8448, addr)
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(tb testing.TB) netip.AddrPort {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	return addr
}

// silentListener accepts connections and never reads or writes on them.
func silentListener(tb testing.TB) netip.AddrPort {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var held []net.Conn
		for {
			c, err := l.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	tb.Cleanup(func() {
		l.Close()
		<-done
	})
	return netip.MustParseAddrPort(l.Addr().String())
}
