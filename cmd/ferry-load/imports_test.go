package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/ferry-matrix/ferry"

// goListDeps returns the non-standard packages pkg depends on, itself
// excluded, by `go list -deps`.
func goListDeps(t *testing.T, pkg string) []string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v: %s", pkg, err, stderr.String())
	}
	var deps []string
	for _, line := range strings.Split(string(out), "\n") {
		if line = strings.TrimSpace(line); line != "" && line != pkg {
			deps = append(deps, line)
		}
	}
	return deps
}

// TestImports_OnlyRoomsAndKeys keeps ferry-load independent of Ferry's
// internals, so it measures any homeserver the same way: besides the
// standard library it may use the rooms and keys packages (and what they
// use), nothing else of Ferry (no federation, homeserver or store) and no
// other module.
func TestImports_OnlyRoomsAndKeys(t *testing.T) {
	allowed := []string{module + "/rooms", module + "/keys"}
	allowed = append(allowed, goListDeps(t, module+"/rooms")...)
	allowed = append(allowed, goListDeps(t, module+"/keys")...)
	deps := goListDeps(t, module+"/cmd/ferry-load")
	if !slices.Contains(deps, module+"/rooms") || !slices.Contains(deps, module+"/keys") {
		t.Fatalf("go list reports deps %v, without rooms and keys", deps)
	}
	for _, d := range deps {
		if !slices.Contains(allowed, d) {
			t.Errorf("ferry-load depends on %s; it may only use the standard library, rooms and keys", d)
		}
	}
}
