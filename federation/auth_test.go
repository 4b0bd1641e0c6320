package federation

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/ferry-matrix/ferry/rooms"
)

// TestAuth_MultipleHeaders: a sender with several keys may send one header
// per key; any one that verifies is enough, but they must all name the
// same origin.
func TestAuth_MultipleHeaders(t *testing.T) {
	originOwn := testKeys(t, 3)
	originKey := originOwn.Signer("a.test")
	var origin string
	ts := authedTestServer(t, originKey, originOwn, nil, func(w http.ResponseWriter, r *http.Request, in *Incoming) error {
		origin = in.Origin
		writeJSON(w, http.StatusOK, map[string]any{})
		return nil
	})
	const uri = "/_matrix/federation/v1/query/profile?user_id=%40x%3Ab.test"
	_, stale, _ := ed25519.GenerateKey(nil)
	unknownKey := rooms.SigningKey{ServerName: "a.test", KeyID: "ed25519:rotated", Private: stale}
	_, other, _ := ed25519.GenerateKey(nil)
	otherOrigin := rooms.SigningKey{ServerName: "c.test", KeyID: "ed25519:c", Private: other}

	send := func(headers ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", ts.URL+uri, nil)
		for _, h := range headers {
			req.Header.Add("Authorization", h)
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	good := signedHeader(t, originKey, "b.test", "GET", uri, nil)
	if status, body := send(signedHeader(t, unknownKey, "b.test", "GET", uri, nil), good); status != 200 || origin != "a.test" {
		t.Fatalf("unknown key then good key: %d %s", status, body)
	}
	if status, body := send("Bearer token", good); status != 200 {
		t.Fatalf("other scheme beside X-Matrix: %d %s", status, body)
	}
	if status, body := send(good, signedHeader(t, otherOrigin, "b.test", "GET", uri, nil)); status != 401 {
		t.Fatalf("two origins: %d %s", status, body)
	}
	if status, body := send("Bearer token"); status != 401 {
		t.Fatalf("no X-Matrix header: %d %s", status, body)
	}
}

func TestMatrixErrorFor_Federation(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("x: %w", ErrBadXMatrix), 401, "M_UNAUTHORIZED"},
		{unauthorized("bad"), 401, "M_UNAUTHORIZED"},
		{fmt.Errorf("%w: a.test", ErrServerDenied), 403, "M_FORBIDDEN"},
		{fmt.Errorf("alias #a:b: %w", ErrNotFound), 404, "M_NOT_FOUND"},
		{errors.Join(errors.New("x"), &http.MaxBytesError{Limit: 5}), 413, "M_TOO_LARGE"},
	} {
		me, internal := matrixErrorFor(tc.err)
		if me.Status != tc.status || me.Code != tc.code || internal {
			t.Errorf("matrixErrorFor(%v) = %d %s internal=%v, want %d %s", tc.err, me.Status, me.Code, internal, tc.status, tc.code)
		}
	}
}
