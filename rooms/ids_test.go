package rooms

import (
	"errors"
	"strings"
	"testing"
)

type idCase struct {
	name  string
	in    string
	valid bool
}

func runIDCases(t *testing.T, cases []idCase, parse func(string) (string, error)) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parse(c.in)
			if c.valid {
				if err != nil {
					t.Fatalf("%q rejected: %v", c.in, err)
				}
				if got != c.in {
					t.Fatalf("%q parsed to %q", c.in, got)
				}
				return
			}
			if err == nil {
				t.Fatalf("%q accepted", c.in)
			}
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("%q: error %v does not match ErrInvalidID", c.in, err)
			}
			var idErr *IDError
			if !errors.As(err, &idErr) || idErr.Reason == "" {
				t.Fatalf("%q: error %v carries no reason", c.in, err)
			}
		})
	}
}

var idRepeat = strings.Repeat

func TestParseServerName(t *testing.T) {
	cases := []idCase{
		{"dns", "matrix.org", true},
		{"dns with port", "matrix.org:8888", true},
		{"ipv4", "1.2.3.4", true},
		{"ipv4 with port", "1.2.3.4:1234", true},
		{"ipv6", "[1234:5678::abcd]", true},
		{"ipv6 with port", "[1234:5678::abcd]:5678", true},
		{"ipv6 loopback", "[::1]", true},
		{"ipv6 embedded ipv4", "[::ffff:1.2.3.4]", true},
		{"single label", "localhost", true},
		{"upper case", "MATRIX.ORG", true},
		{"hyphen", "my-server.example", true},
		{"three numeric labels is a DNS name", "1.2.3", true},
		{"max port", "example.org:65535", true},
		{"dns 255 chars", idRepeat("a", 255), true},
		{"dns 255 chars with port", idRepeat("a", 255) + ":8448", true},
		{"empty", "", false},
		{"port only", ":8448", false},
		{"empty port", "example.org:", false},
		{"port six digits", "example.org:123456", false},
		{"port too large", "example.org:65536", false},
		{"port not numeric", "example.org:http", false},
		{"two ports", "example.org:80:80", false},
		{"underscore", "my_server.example", false},
		{"space", "exa mple.org", false},
		{"non-ascii", "bücher.example", false},
		{"ipv4 out of range", "1.2.3.256", false},
		{"ipv4 four digits", "1.2.3.0004", false},
		{"ipv6 unbracketed", "1234:5678::abcd", false},
		{"ipv6 unclosed", "[::1", false},
		{"ipv6 junk after", "[::1]x", false},
		{"ipv6 bad char", "[::g]", false},
		{"ipv6 zone", "[fe80::1%eth0]", false},
		{"ipv6 too short", "[:]", false},
		{"ipv6 not an address", "[1:2:3]", false},
		{"ipv6 holding ipv4 only", "[1.2.3.4]", false},
		{"dns 256 chars", idRepeat("a", 256), false},
		{"slash", "example.org/path", false},
	}
	runIDCases(t, cases, func(s string) (string, error) {
		v, err := ParseServerName(s)
		return string(v), err
	})
}

func TestServerName_HostPort(t *testing.T) {
	cases := []struct {
		in      string
		host    string
		port    int
		hasPort bool
	}{
		{"matrix.org", "matrix.org", 0, false},
		{"matrix.org:8448", "matrix.org", 8448, true},
		{"[::1]:8008", "[::1]", 8008, true},
		{"[::1]", "[::1]", 0, false},
		{"1.2.3.4:1", "1.2.3.4", 1, true},
	}
	for _, c := range cases {
		s, err := ParseServerName(c.in)
		if err != nil {
			t.Fatal(err)
		}
		port, ok := s.Port()
		if s.Host() != c.host || port != c.port || ok != c.hasPort {
			t.Errorf("%s: host %q port %d %v, want %q %d %v", c.in, s.Host(), port, ok, c.host, c.port, c.hasPort)
		}
	}
}

func TestParseUserID(t *testing.T) {
	cases := []idCase{
		{"simple", "@alice:example.org", true},
		{"all allowed punctuation", "@a.b_c=d-e/f+g:example.org", true},
		{"digits", "@123:example.org", true},
		{"port", "@alice:example.org:8448", true},
		{"ipv6 server", "@alice:[::1]:8448", true},
		{"historical upper case", "@Alice:example.org", true},
		{"historical unicode", "@älice:example.org", true},
		{"historical control char", "@a\x01b:example.org", true},
		{"historical empty localpart", "@:example.org", true},
		{"historical space", "@a b:example.org", true},
		{"exactly 255 bytes", "@" + idRepeat("a", 255-len("@:example.org")) + ":example.org", true},
		{"256 bytes", "@" + idRepeat("a", 256-len("@:example.org")) + ":example.org", false},
		{"empty", "", false},
		{"no sigil", "alice:example.org", false},
		{"wrong sigil", "#alice:example.org", false},
		{"no server", "@alice", false},
		{"empty server", "@alice:", false},
		{"bad server", "@alice:exa_mple.org", false},
		{"nul in localpart", "@a\x00b:example.org", false},
		{"invalid utf-8", "@a\xffb:example.org", false},
		{"encoded surrogate", "@a\xed\xa0\x80:example.org", false},
	}
	runIDCases(t, cases, func(s string) (string, error) {
		v, err := ParseUserID(s)
		return string(v), err
	})
}

func TestParseUserIDStrict(t *testing.T) {
	cases := []idCase{
		{"simple", "@alice:example.org", true},
		{"all allowed punctuation", "@a.b_c=d-e/f+g:example.org", true},
		{"digits", "@123:example.org", true},
		{"port", "@alice:example.org:8448", true},
		{"exactly 255 bytes", "@" + idRepeat("a", 255-len("@:example.org")) + ":example.org", true},
		{"upper case", "@Alice:example.org", false},
		{"unicode", "@älice:example.org", false},
		{"empty localpart", "@:example.org", false},
		{"space", "@a b:example.org", false},
		{"star", "@a*:example.org", false},
		{"hash", "@a#b:example.org", false},
		{"256 bytes", "@" + idRepeat("a", 256-len("@:example.org")) + ":example.org", false},
		{"no server", "@alice", false},
		{"bad server", "@alice:exa mple.org", false},
	}
	runIDCases(t, cases, func(s string) (string, error) {
		v, err := ParseUserIDStrict(s)
		return string(v), err
	})
}

func TestUserID_Parts(t *testing.T) {
	u, err := NewUserID("alice", "example.org:8448")
	if err != nil {
		t.Fatal(err)
	}
	if u != "@alice:example.org:8448" || u.Localpart() != "alice" || u.Server() != "example.org:8448" || !u.IsCompliant() {
		t.Fatalf("got %q %q %q %v", u, u.Localpart(), u.Server(), u.IsCompliant())
	}
	if _, err := NewUserID("Alice", "example.org"); err == nil {
		t.Fatal("NewUserID accepted an upper-case localpart")
	}
	old, err := ParseUserID("@Bob:example.org")
	if err != nil {
		t.Fatal(err)
	}
	if old.IsCompliant() {
		t.Fatal("upper-case localpart reported compliant")
	}
}

const sampleHashID = "BeXKh925K_M46DwsuJFR0EyBpE1P7CFUDGuWW4xw55Y"

func TestParseRoomID(t *testing.T) {
	cases := []idCase{
		{"opaque", "!abc123:example.org", true},
		{"opaque with port", "!abc:example.org:8448", true},
		{"opaque unicode localpart", "!日本:example.org", true},
		{"opaque control char", "!a\x01:example.org", true},
		{"hash", "!" + sampleHashID, true},
		{"opaque 255 bytes", "!" + idRepeat("a", 255-len("!:example.org")) + ":example.org", true},
		{"opaque 256 bytes", "!" + idRepeat("a", 256-len("!:example.org")) + ":example.org", false},
		{"empty", "", false},
		{"no sigil", "abc:example.org", false},
		{"wrong sigil", "$" + sampleHashID, false},
		{"empty localpart", "!:example.org", false},
		{"nul in localpart", "!a\x00:example.org", false},
		{"bad server", "!abc:exa mple.org", false},
		{"hash too short", "!" + sampleHashID[1:], false},
		{"hash too long", "!" + sampleHashID + "A", false},
		{"hash standard alphabet", "!" + strings.ReplaceAll(sampleHashID, "_", "/"), false},
		{"hash padded", "!" + sampleHashID + "=", false},
		{"no server no hash", "!abc", false},
		{"invalid utf-8", "!a\xff:example.org", false},
	}
	runIDCases(t, cases, func(s string) (string, error) {
		v, err := ParseRoomID(s)
		return string(v), err
	})
}

func TestParseRoomIDFor(t *testing.T) {
	v10, v12 := mustVersion(t, "10"), mustVersion(t, "12")
	t.Run("v10", func(t *testing.T) {
		runIDCases(t, []idCase{
			{"opaque", "!abc:example.org", true},
			{"hash", "!" + sampleHashID, false},
			{"bad server", "!abc:exa_mple.org", false},
		}, func(s string) (string, error) {
			v, err := ParseRoomIDFor(v10, s)
			return string(v), err
		})
	})
	t.Run("v12", func(t *testing.T) {
		runIDCases(t, []idCase{
			{"hash", "!" + sampleHashID, true},
			{"opaque", "!abc:example.org", false},
			{"hash with server", "!" + sampleHashID + ":example.org", false},
			{"short", "!abc", false},
		}, func(s string) (string, error) {
			v, err := ParseRoomIDFor(v12, s)
			return string(v), err
		})
	})
}

func TestRoomID_Parts(t *testing.T) {
	r := RoomIDFromCreateEventID(EventID("$" + sampleHashID))
	if r != RoomID("!"+sampleHashID) {
		t.Fatalf("room ID %q", r)
	}
	if id, ok := r.CreateEventID(); !ok || id != EventID("$"+sampleHashID) {
		t.Fatalf("create event ID %q %v", id, ok)
	}
	if _, ok := r.Server(); ok {
		t.Fatal("v12 room ID reported a server")
	}
	opaque := RoomID("!abc:example.org")
	if s, ok := opaque.Server(); !ok || s != "example.org" {
		t.Fatalf("server %q %v", s, ok)
	}
	if _, ok := opaque.CreateEventID(); ok {
		t.Fatal("opaque room ID reported a create event")
	}
}

func TestParseEventID(t *testing.T) {
	cases := []idCase{
		{"hash", "$" + sampleHashID, true},
		{"spec example", "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", true},
		{"empty", "", false},
		{"sigil only", "$", false},
		{"wrong sigil", "!" + sampleHashID, false},
		{"no sigil", sampleHashID, false},
		{"legacy with domain", "$abc:example.org", false},
		{"short", "$" + sampleHashID[:42], false},
		{"long", "$" + sampleHashID + "A", false},
		{"standard alphabet", "$zRz9jjiT9wZc3Hl9ij/74aCmTjqV3YMlj9sj3Uqxg6o", false},
		{"padded", "$" + sampleHashID + "=", false},
		{"space", "$" + sampleHashID[:42] + " ", false},
	}
	runIDCases(t, cases, func(s string) (string, error) {
		v, err := ParseEventID(s)
		return string(v), err
	})
}

func TestParseRoomAlias(t *testing.T) {
	cases := []idCase{
		{"simple", "#room:example.org", true},
		{"unicode", "#日本語:example.org", true},
		{"upper case", "#Room:example.org:8448", true},
		{"255 bytes", "#" + idRepeat("a", 255-len("#:example.org")) + ":example.org", true},
		{"256 bytes", "#" + idRepeat("a", 256-len("#:example.org")) + ":example.org", false},
		{"empty", "", false},
		{"no sigil", "room:example.org", false},
		{"wrong sigil", "!room:example.org", false},
		{"empty localpart", "#:example.org", false},
		{"no server", "#room", false},
		{"nul", "#ro\x00om:example.org", false},
		{"bad server", "#room:example.org:", false},
		{"invalid utf-8", "#\xc3:example.org", false},
	}
	runIDCases(t, cases, func(s string) (string, error) {
		v, err := ParseRoomAlias(s)
		return string(v), err
	})
	a := RoomAlias("#room:example.org")
	if a.Localpart() != "room" || a.Server() != "example.org" {
		t.Fatalf("parts %q %q", a.Localpart(), a.Server())
	}
}

func TestIDError_Truncates(t *testing.T) {
	_, err := ParseUserID("@" + idRepeat("ä", 200) + ":example.org")
	var idErr *IDError
	if !errors.As(err, &idErr) {
		t.Fatalf("error %v", err)
	}
	if len(idErr.Input) > 90 || !strings.HasSuffix(idErr.Input, "...") {
		t.Fatalf("input not truncated: %q", idErr.Input)
	}
	if !strings.Contains(err.Error(), "255") {
		t.Fatalf("error does not name the limit: %v", err)
	}
}
