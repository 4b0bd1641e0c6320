package client

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestReadSSE(t *testing.T) {
	stream := ": keepalive\n" +
		"id: 1\nevent: event\ndata: {\"kind\":\"event\"}\n\n" +
		"id: 2\r\nevent: edu\r\ndata:{\"a\":\r\ndata: 1}\r\n\r\n" + // CRLF, no space, two data lines
		"retry: 1000\n\n" + // no data: nothing dispatched
		"data: no id\n\n" +
		"id: 3\ndata: cut off"
	type message struct{ id, data string }
	var got []message
	err := readSSE(strings.NewReader(stream), func(id, data string) error {
		got = append(got, message{id, data})
		return nil
	})
	want := []message{{"1", `{"kind":"event"}`}, {"2", "{\"a\":\n1}"}, {"", "no id"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("messages %q, want %q", got, want)
	}
	if !errors.Is(err, errStreamEnded) {
		t.Errorf("end of stream: %v", err)
	}

	stop := errors.New("stop")
	if err := readSSE(strings.NewReader("data: x\n\ndata: y\n\n"), func(string, string) error { return stop }); err != stop {
		t.Errorf("dispatch error: %v", err)
	}
	if err := readSSE(strings.NewReader("data: "+strings.Repeat("x", maxSSELine+1)), func(string, string) error { return nil }); err == nil || errors.Is(err, errStreamEnded) {
		t.Errorf("over-long line: %v", err)
	}
}

func TestDeliver(t *testing.T) {
	var got Item
	if err := deliver("7", `{"kind":"edu","room_id":"!r","edu":{"type":"m.typing"}}`, func(it Item) error { got = it; return nil }); err != nil {
		t.Fatal(err)
	}
	if got.Pos != "7" || got.Kind != "edu" || string(got.EDU) != `{"type":"m.typing"}` {
		t.Errorf("item without pos: %+v", got)
	}
	var stop *stopError
	if err := deliver("8", "not json", func(Item) error { return nil }); !errors.As(err, &stop) {
		t.Errorf("undecodable item: %v, want a stopError (no reconnection)", err)
	}
}
