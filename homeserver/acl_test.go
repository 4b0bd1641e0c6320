package homeserver

import "testing"

func TestACLAllows(t *testing.T) {
	acl := func(allow, deny []any, ipLiterals any) map[string]any {
		c := map[string]any{}
		if allow != nil {
			c["allow"] = allow
		}
		if deny != nil {
			c["deny"] = deny
		}
		if ipLiterals != nil {
			c["allow_ip_literals"] = ipLiterals
		}
		return c
	}
	cases := []struct {
		name    string
		content map[string]any
		server  string
		want    bool
	}{
		{"allow all", acl([]any{"*"}, nil, nil), "example.org", true},
		{"empty allow denies", acl([]any{}, nil, nil), "example.org", false},
		{"no allow key denies", acl(nil, []any{"evil.org"}, nil), "example.org", false},
		{"deny wins over allow", acl([]any{"*"}, []any{"evil.org"}, nil), "evil.org", false},
		{"deny glob", acl([]any{"*"}, []any{"*.evil.org"}, nil), "a.b.evil.org", false},
		{"deny glob does not match the bare domain", acl([]any{"*"}, []any{"*.evil.org"}, nil), "evil.org", true},
		{"question mark is one character", acl([]any{"host?.org"}, nil, nil), "host1.org", true},
		{"question mark is not two", acl([]any{"host?.org"}, nil, nil), "host12.org", false},
		{"case-insensitive", acl([]any{"*"}, []any{"EVIL.org"}, nil), "evil.ORG", false},
		{"port ignored", acl([]any{"*"}, []any{"evil.org"}, nil), "evil.org:8448", false},
		{"IP literal allowed by default", acl([]any{"*"}, nil, nil), "192.0.2.1", true},
		{"IP literal refused", acl([]any{"*"}, nil, false), "192.0.2.1:8448", false},
		{"IPv6 literal refused", acl([]any{"*"}, nil, false), "[2001:db8::1]:8448", false},
		{"names unaffected by allow_ip_literals", acl([]any{"*"}, nil, false), "example.org", true},
		{"non-string entries ignored", acl([]any{7, "ok.org"}, []any{nil}, nil), "ok.org", true},
		{"allow_ip_literals not a bool", acl([]any{"*"}, nil, "no"), "192.0.2.1", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ACLAllows(c.content, c.server); got != c.want {
				t.Fatalf("ACLAllows(%v, %q) = %v, want %v", c.content, c.server, got, c.want)
			}
		})
	}
}

func TestGlobMatch(t *testing.T) {
	cases := []struct {
		pattern, s string
		want       bool
	}{
		{"", "", true},
		{"", "a", false},
		{"*", "", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"**a", "ba", true},
		{"*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"h?st", "höst", true},
	}
	for _, c := range cases {
		if got := globMatch(c.pattern, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}
