package homeserver

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func TestNormalizeContent(t *testing.T) {
	var decoded map[string]any
	if err := json.Unmarshal([]byte(`{"n": 3, "list": [1, {"deep": -9007199254740991}], "s": "x", "b": true, "z": null}`), &decoded); err != nil {
		t.Fatal(err)
	}
	got, err := normalizeContent(decoded)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"n": int64(3), "list": []any{int64(1), map[string]any{"deep": int64(-9007199254740991)}}, "s": "x", "b": true, "z": nil}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v\nwant %#v", got, want)
	}
	if _, isFloat := decoded["n"].(float64); !isFloat {
		t.Fatal("the caller's content was modified")
	}
	for _, bad := range []map[string]any{
		{"f": 1.5},
		{"big": float64(1 << 60)},
		{"nested": []any{map[string]any{"f": 0.1}}},
		{"num": json.Number("1e3")},
		{"i": int64(1) << 62},
	} {
		_, err := normalizeContent(bad)
		var refusal *Error
		if !errors.As(err, &refusal) || refusal.Code != "M_BAD_JSON" {
			t.Errorf("%v: %v, want M_BAD_JSON", bad, err)
		}
	}
}
