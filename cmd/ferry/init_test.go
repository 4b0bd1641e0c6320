package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ferry-matrix/ferry/config"
	"github.com/ferry-matrix/ferry/rooms"
)

var update = flag.Bool("update", false, "rewrite deploy/ferry.toml from the ferry init template")

func TestInit_WritesLoadableConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.toml")
	var stdout, stderr bytes.Buffer
	if code := runMain([]string{"init", "-config", path, "-server-name", "example.org"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	want.ServerName = "example.org"
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("loaded %+v\nwant %+v", cfg, want)
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", info.Mode().Perm())
	}
	text, _ := os.ReadFile(path)
	if n := strings.Count(string(text), "\n#"); n < 30 {
		t.Errorf("only %d comment lines: not a commented file", n)
	}

	stderr.Reset()
	if code := runMain([]string{"init", "-config", path}, nil, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), "use -force") {
		t.Errorf("overwrote without -force: exit %d %s", code, stderr.String())
	}
	if code := runMain([]string{"init", "-config", path, "-force"}, nil, &stdout, &stderr); code != 0 {
		t.Errorf("-force: exit %d", code)
	}
	stderr.Reset()
	if code := runMain([]string{"init", "-config", "-", "-server-name", "bad name"}, nil, &stdout, &stderr); code == 0 || !strings.Contains(stderr.String(), "server_name") {
		t.Errorf("bad server name: exit %d %s", code, stderr.String())
	}
}

// TestInit_DeployExample keeps deploy/ferry.toml what `ferry init` writes
// for a public server. Regenerate with: go test ./cmd/ferry -run DeployExample -update
func TestInit_DeployExample(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"init", "-config", "-", "-server-name", "example.org", "-data-dir", "/var/lib/ferry", "-federation-listen", "0.0.0.0:8448"}
	if code := runMain(args, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	golden := filepath.Join("..", "..", "deploy", "ferry.toml")
	if *update {
		if err := os.WriteFile(golden, stdout.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stdout.Bytes(), want) {
		t.Errorf("deploy/ferry.toml differs from `ferry init` output; run with -update")
	}
}

// TestRoomVersions_InStep checks that the room versions config accepts are
// exactly those package rooms implements (config may not import rooms).
func TestRoomVersions_InStep(t *testing.T) {
	if got, want := config.RoomVersions, rooms.SupportedVersionIDs(); !reflect.DeepEqual(got, want) {
		t.Errorf("config.RoomVersions = %v, rooms supports %v", got, want)
	}
	if _, err := rooms.LookupVersion(config.DefaultRoomVersion); err != nil {
		t.Errorf("default room version: %v", err)
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runMain([]string{"version"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	out := stdout.String()
	if !strings.HasPrefix(out, "ferry "+versionString()+" (go") || !strings.Contains(out, "10 (LTS, I.1)") || !strings.Contains(out, "12") {
		t.Errorf("version output %q", out)
	}
	old := version
	version = "v9.9.9"
	defer func() { version = old }()
	if versionString() != "v9.9.9" {
		t.Errorf("versionString() ignores -X main.version")
	}
}

// TestServerNames_ConfigWithinRooms checks that config's server-name check
// (config may not import rooms) never accepts a name rooms.ParseServerName
// rejects, and that both agree on the common cases.
func TestServerNames_ConfigWithinRooms(t *testing.T) {
	names := []string{
		"example.org", "localhost:8448", "a-b.c:1", "1.2.3.4", "1.2.3.4:65535", "[::1]", "[::1]:8448",
		"[2001:db8::1]:443", "[::ffff:1.2.3.4]", "256.1.1.1", "1.2.3.4:65536", "", ":8448", "a.test:",
		"a.test:0", "a.test:000001", "a.test:+1", "a_b.test", "a b", "[zz]", "[::1", "[::1]x", "a:b:1",
		"xn--bcher-kva.example", strings.Repeat("a", 256), "01.2.3.4", "1.2.3", "café.test",
	}
	for _, name := range names {
		cfg := config.Default()
		cfg.ServerName = name
		configOK := cfg.Validate() == nil
		_, err := rooms.ParseServerName(name)
		if configOK && err != nil {
			t.Errorf("%q: config accepts, rooms rejects: %v", name, err)
		}
		// Stricter on purpose: port 0 and leading zeros, which the
		// grammar allows but no real server uses.
		if !configOK && err == nil && name != "a.test:0" && name != "01.2.3.4" {
			t.Errorf("%q: rooms accepts, config rejects", name)
		}
	}
}
