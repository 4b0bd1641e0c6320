package main

import (
	"errors"
	"net/http"
	"testing"
)

// TestFakeServer_RejectsBadXMatrix: the resident's endpoints answer 401
// to requests whose X-Matrix header is missing, malformed, for another
// destination, from an invalid origin or signed by the wrong key.
func TestFakeServer_RejectsBadXMatrix(t *testing.T) {
	t.Parallel()
	b := startBigRoom(t, "12", 5, 1)
	ctx := testContext(t)
	cert, err := selfSignedCert("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	caller, err := startFakeServer("127.0.0.1", cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(caller.Close)
	other, err := startFakeServer("127.0.0.1", cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.Close)
	hc := httpsClient(true, 1)
	resident := b.Ready.Servers[0]
	uri := "/_matrix/federation/v1/event/%24nothing"
	sign := func(from, dest string) string {
		key := caller.Signer
		key.ServerName = from
		h, err := signRequest(key, dest, http.MethodGet, uri, nil)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	for name, auth := range map[string]string{
		"none":              "",
		"not X-Matrix":      "Bearer abc",
		"no signature":      `X-Matrix origin="` + caller.Name + `",key="ed25519:x"`,
		"other destination": sign(caller.Name, other.Name),
		"invalid origin":    sign("not a server name", resident),
		"wrong key":         sign(other.Name, resident), // the caller's key in the name of other, which does not publish it
	} {
		_, err := doSigned(ctx, hc, resident, http.MethodGet, uri, nil, auth)
		var me *matrixError
		if !errors.As(err, &me) || me.Status != http.StatusUnauthorized {
			t.Errorf("%s: %v, want 401", name, err)
		}
	}
	// The same request, signed properly, reaches the handler (404: no
	// such event).
	_, err = doSigned(ctx, hc, resident, http.MethodGet, uri, nil, sign(caller.Name, resident))
	var me *matrixError
	if !errors.As(err, &me) || me.Status != http.StatusNotFound {
		t.Errorf("signed request: %v, want 404", err)
	}
}

func TestParseXMatrix(t *testing.T) {
	t.Parallel()
	x, err := parseXMatrix(`X-Matrix origin=a.example:8448, destination="b.example",key="ed25519:k1",sig="c2ln"`)
	if err != nil || x.origin != "a.example:8448" || x.destination != "b.example" || x.key != "ed25519:k1" || x.sig != "c2ln" {
		t.Fatalf("%+v %v", x, err)
	}
	for _, bad := range []string{"", "X-Matrix", `Basic origin="a"`, `X-Matrix origin="a",key="k"`} {
		if _, err := parseXMatrix(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
