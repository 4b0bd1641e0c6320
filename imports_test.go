package ferry

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

const module = "github.com/ferry-matrix/ferry"

// goPackage is the part of `go list -json` these tests read.
type goPackage struct {
	ImportPath string
	Name       string
	Doc        string
	GoFiles    []string
	Imports    []string // direct imports
	Deps       []string // every package it depends on, transitively
}

var (
	listOnce sync.Once
	listPkgs []goPackage
	listErr  error
)

// listPackages runs `go list -e -json ./...` once for all tests.
func listPackages(t *testing.T) []goPackage {
	t.Helper()
	listOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		var stderr bytes.Buffer
		cmd := exec.Command(goBin, "list", "-e", "-json", "./...")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			listErr = errors.New("go list: " + err.Error() + ": " + stderr.String())
			return
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		for {
			var p goPackage
			if err := dec.Decode(&p); err == io.EOF {
				break
			} else if err != nil {
				listErr = err
				return
			}
			listPkgs = append(listPkgs, p)
		}
	})
	if listErr != nil {
		t.Fatal(listErr)
	}
	if len(listPkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return listPkgs
}

// component returns the top-level directory of an internal package
// ("rooms" for rooms/roomstest), or "" for the root package, and false for
// packages outside the module.
func component(path string) (string, bool) {
	if path == module {
		return "", true
	}
	rest, ok := strings.CutPrefix(path, module+"/")
	if !ok {
		return "", false
	}
	top, _, _ := strings.Cut(rest, "/")
	return top, true
}

// isStd reports whether path is a standard-library package: its first
// element has no dot (vendored std packages start with "vendor/").
func isStd(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

// mayDependOn is DESIGN.md's import graph, closed transitively: a package
// may depend (directly or not) on its own component and those listed.
// cmd and the root package (the embedding entry point, wiring only) may
// depend on everything.
var mayDependOn = map[string][]string{
	"rooms":      {},
	"keys":       {"rooms"},
	"store":      {"rooms", "keys"},
	"federation": {"rooms", "keys"},
	"homeserver": {"rooms", "keys", "store"},
	"hostapi":    {"homeserver", "store", "rooms", "keys"},
	"metrics":    {"homeserver", "store", "rooms", "keys"},
	"config":     {},
}

// thirdParty limits the non-standard modules some components may reach.
// Components not listed may use any module in go.mod.
var thirdParty = map[string][]string{
	"rooms":  {},
	"keys":   {"golang.org/x/crypto", "golang.org/x/sys"},
	"config": {"github.com/BurntSushi/toml"},
}

// directOnly limits which components may import a package directly.
var directOnly = map[string][]string{
	"github.com/gorilla/mux": {"federation", "hostapi"},
	"database/sql":           {"store"},
	"modernc.org/sqlite":     {"store"},
}

func TestImportBoundaries(t *testing.T) {
	pkgs := listPackages(t)
	for _, p := range pkgs {
		comp, ok := component(p.ImportPath)
		if !ok {
			continue
		}
		if comp == "cmd" || comp == "" {
			continue
		}
		allowed, known := mayDependOn[comp]
		if !known {
			t.Errorf("%s: component %q is not in DESIGN.md's import graph; add it to mayDependOn", p.ImportPath, comp)
			continue
		}
		for _, dep := range p.Deps {
			if depComp, internal := component(dep); internal {
				if depComp != comp && !slices.Contains(allowed, depComp) {
					t.Errorf("%s depends on %s: %s may only depend on %v", p.ImportPath, dep, comp, allowed)
				}
				continue
			}
			if isStd(dep) {
				continue
			}
			if mods, limited := thirdParty[comp]; limited && !slices.ContainsFunc(mods, func(m string) bool {
				return dep == m || strings.HasPrefix(dep, m+"/")
			}) {
				t.Errorf("%s depends on %s: %s may only use the standard library and %v", p.ImportPath, dep, comp, mods)
			}
		}
		for _, imp := range p.Imports {
			for target, comps := range directOnly {
				if (imp == target || strings.HasPrefix(imp, target+"/")) && !slices.Contains(comps, comp) {
					t.Errorf("%s imports %s, which only %v may import", p.ImportPath, imp, comps)
				}
			}
		}
	}
}

// TestImportBoundaries_RoomsIsPure spells out DESIGN.md's rule for the
// protocol package: no network, database or logging, even from std.
func TestImportBoundaries_RoomsIsPure(t *testing.T) {
	forbidden := []string{"net/http", "database/sql", "github.com/rs/zerolog", "github.com/gorilla/mux", "os/exec"}
	found := false
	for _, p := range listPackages(t) {
		if p.ImportPath != module+"/rooms" {
			continue
		}
		found = true
		for _, dep := range p.Deps {
			if slices.Contains(forbidden, dep) {
				t.Errorf("rooms depends on %s", dep)
			}
		}
	}
	if !found {
		t.Fatal("package rooms not listed")
	}
}

// TestPackageDocs requires a package doc comment on every package, in the
// "Package name ..." (or "Command name ...") form.
func TestPackageDocs(t *testing.T) {
	for _, p := range listPackages(t) {
		if _, ok := component(p.ImportPath); !ok || len(p.GoFiles) == 0 {
			continue
		}
		prefix := "Package " + p.Name + " "
		if p.Name == "main" {
			prefix = "Command "
		}
		if !strings.HasPrefix(p.Doc, prefix) {
			t.Errorf("%s: package doc %q should start with %q", p.ImportPath, p.Doc, prefix)
		}
	}
}
