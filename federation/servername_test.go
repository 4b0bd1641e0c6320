package federation

import (
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
)

func TestParseServerName(t *testing.T) {
	cases := []struct {
		in       string
		ok       bool
		host     string
		port     uint16
		hasPort  bool
		isIP     bool
		inHeader string
	}{
		{in: "matrix.org", ok: true, host: "matrix.org"},
		{in: "matrix.org:8448", ok: true, host: "matrix.org", port: 8448, hasPort: true},
		{in: "localhost", ok: true, host: "localhost"},
		{in: "1.2.3.4", ok: true, host: "1.2.3.4", isIP: true},
		{in: "1.2.3.4:1234", ok: true, host: "1.2.3.4", port: 1234, hasPort: true, isIP: true},
		{in: "[1234:5678::abcd]", ok: true, host: "1234:5678::abcd", isIP: true, inHeader: "[1234:5678::abcd]"},
		{in: "[1234:5678::abcd]:5678", ok: true, host: "1234:5678::abcd", port: 5678, hasPort: true, isIP: true},
		{in: "[::1]:65535", ok: true, host: "::1", port: 65535, hasPort: true, isIP: true},
		{in: "Example.ORG", ok: true, host: "Example.ORG"},
		{in: ""},
		{in: ":8448"},
		{in: "matrix.org:"},
		{in: "matrix.org:0"},
		{in: "matrix.org:65536"},
		{in: "matrix.org:123456"},
		{in: "matrix.org:+80"},
		{in: "matrix.org:80:80"},
		{in: "mat rix.org"},
		{in: "matrix_org"},
		{in: "999.1.1.1"},
		{in: "[1.2.3.4]"},
		{in: "[::1"},
		{in: "[::1]x"},
		{in: "[fe80::1%eth0]"},
		{in: "::1"},
		{in: "a/b"},
		{in: strings.Repeat("a", 256)},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseServerName(tc.in)
			if !tc.ok {
				if err == nil {
					t.Fatalf("parseServerName(%q) = %+v, want error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseServerName(%q): %v", tc.in, err)
			}
			if got.host != tc.host || got.port != tc.port || got.hasPort != tc.hasPort || got.isIP() != tc.isIP || got.raw != tc.in {
				t.Fatalf("parseServerName(%q) = %+v", tc.in, got)
			}
			if tc.inHeader != "" && got.hostForHeader() != tc.inHeader {
				t.Fatalf("hostForHeader = %q, want %q", got.hostForHeader(), tc.inHeader)
			}
		})
	}
}

// FuzzParseServerName checks that parsing never panics, that accepted
// names round-trip through their parts, and that accepted names obey the
// grammar's character set.
func FuzzParseServerName(f *testing.F) {
	for _, seed := range []string{
		"matrix.org", "matrix.org:8448", "1.2.3.4:5", "[::1]", "[::1]:8448", "[::ffff:1.2.3.4]:1",
		"", ":", "[", "[]", "[::1]:", "a:99999", "999.999.999.999", "a..b", "-", "\x00", "é.example",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sn, err := parseServerName(s)
		if err != nil {
			return
		}
		if _, err := rooms.ParseServerName(s); err != nil {
			t.Fatalf("parse(%q) accepted what rooms.ParseServerName rejects: %v", s, err)
		}
		rebuilt := sn.hostForHeader()
		if sn.hasPort {
			rebuilt += ":" + itoa(int(sn.port))
		}
		// A port with leading zeros is accepted but formats differently.
		if rebuilt != s && !strings.Contains(s, ":0") {
			t.Fatalf("parse(%q) rebuilds as %q", s, rebuilt)
		}
		if sn.hasPort && sn.port == 0 {
			t.Fatalf("parse(%q) accepted port 0", s)
		}
		if !sn.isIP() && strings.ContainsAny(sn.host, "[]:/ ") {
			t.Fatalf("parse(%q) accepted host %q", s, sn.host)
		}
	})
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
