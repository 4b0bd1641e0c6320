package rooms

import (
	"errors"
	"strings"
	"testing"
)

func TestParseJSON_StrictRejections(t *testing.T) {
	cases := []struct {
		name, in, reason string
	}{
		{"float", `{"a":1.5}`, "only integers"},
		{"integral float", `{"a":1.0}`, "only integers"},
		{"exponent", `{"a":1e10}`, "only integers"},
		{"upper exponent", `{"a":1E2}`, "only integers"},
		{"negative zero", `{"a":-0}`, "negative zero"},
		{"2^53", `{"a":9007199254740992}`, "out of range"},
		{"-2^53", `{"a":-9007199254740992}`, "out of range"},
		{"beyond int64", `{"a":99999999999999999999}`, "out of range"},
		{"leading zero", `{"a":01}`, "expected ',' or '}'"},
		{"plus sign", `{"a":+1}`, "unexpected character"},
		{"duplicate key", `{"a":1,"a":2}`, "duplicate key"},
		{"duplicate key after escape", `{"a":1,"\u0061":2}`, "duplicate key"},
		{"nested duplicate key", `{"x":{"b":1,"b":1}}`, "duplicate key"},
		{"invalid utf-8", "{\"a\":\"\xff\"}", "invalid UTF-8"},
		{"truncated utf-8", "{\"a\":\"\xc3\"}", "invalid UTF-8"},
		{"encoded surrogate", "{\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8"},
		{"invalid utf-8 in key", "{\"\xff\":1}", "invalid UTF-8"},
		{"lone high surrogate", `{"a":"\ud800"}`, "lone high surrogate"},
		{"lone low surrogate", `{"a":"\udc00"}`, "lone low surrogate"},
		{"high surrogate then letter", `{"a":"\ud800\u0041"}`, "not followed by low surrogate"},
		{"raw control character", "{\"a\":\"\x01\"}", "control character"},
		{"bad escape", `{"a":"\x"}`, "invalid escape"},
		{"short unicode escape", `{"a":"\u12"}`, "hex digit"},
		{"trailing comma", `{"a":1,}`, "expected object key"},
		{"trailing data", `{} {}`, "trailing data"},
		{"unterminated", `{"a":"b`, "unterminated"},
		{"single quotes", `{'a':1}`, "expected object key"},
		{"NaN", `{"a":NaN}`, "unexpected character"},
		{"empty", ``, "unexpected end"},
		{"too deep", strings.Repeat("[", 200) + strings.Repeat("]", 200), "nesting too deep"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseJSON([]byte(c.in))
			var jerr *JSONError
			if !errors.As(err, &jerr) || !errors.Is(err, ErrInvalidJSON) {
				t.Fatalf("ParseJSON(%q) = %v, want a JSONError", c.in, err)
			}
			if !strings.Contains(jerr.Reason, c.reason) {
				t.Fatalf("reason %q does not say %q", jerr.Reason, c.reason)
			}
		})
	}
}

func TestParseJSON_Accepts(t *testing.T) {
	cases := []struct{ in, canonical string }{
		{`{"a":9007199254740991,"b":-9007199254740991}`, `{"a":9007199254740991,"b":-9007199254740991}`},
		{`{"a":0,"b":-1}`, `{"a":0,"b":-1}`},
		{` { "b" : [ 1 , true , false , null ] , "a" : "x" } `, `{"a":"x","b":[1,true,false,null]}`},
		{`{"a":"\ud83d\ude00"}`, `{"a":"😀"}`},
		{`{"a":"\/\u00e9\u2028"}`, "{\"a\":\"/é\u2028\"}"},
		{`{"a":"\u0000\u001f\b\f\n\r\t\"\\"}`, `{"a":"\u0000\u001f\b\f\n\r\t\"\\"}`},
		{`{"a":"<>&\u007f"}`, "{\"a\":\"<>&\x7f\"}"},
		{`{"é":1,"z":2,"日":3,"😀":4}`, `{"z":2,"é":1,"日":3,"😀":4}`},
		{`[]`, `[]`},
		{`"x"`, `"x"`},
	}
	for _, c := range cases {
		got, err := CanonicalJSON([]byte(c.in))
		if err != nil {
			t.Fatalf("CanonicalJSON(%q): %v", c.in, err)
		}
		if string(got) != c.canonical {
			t.Errorf("CanonicalJSON(%q) = %s, want %s", c.in, got, c.canonical)
		}
	}
}

func TestEncodeCanonical_Rejects(t *testing.T) {
	cases := []struct {
		name string
		v    any
	}{
		{"2^53", int64(1 << 53)},
		{"invalid utf-8", "\xff"},
		{"float", 1.5},
		{"nested unsupported", map[string]any{"a": []any{struct{}{}}}},
	}
	for _, c := range cases {
		if _, err := EncodeCanonical(c.v); err == nil {
			t.Errorf("%s: encoded", c.name)
		}
	}
}
