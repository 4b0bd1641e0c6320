package rooms

import (
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/")

// dumpVersionTable renders every field of every version by reflection, so
// a field added to Version shows up in the golden file without edits here.
func dumpVersionTable() string {
	var b strings.Builder
	for _, v := range SupportedVersions() {
		fmt.Fprintf(&b, "version %s\n", v)
		rv := reflect.ValueOf(v)
		for i := 0; i < rv.NumField(); i++ {
			f := rv.Type().Field(i)
			val := rv.Field(i)
			if s, ok := val.Interface().(fmt.Stringer); ok && val.Kind() != reflect.String {
				fmt.Fprintf(&b, "  %-27s %d = %s\n", f.Name, val.Int(), s)
				continue
			}
			fmt.Fprintf(&b, "  %-27s %#v\n", f.Name, val.Interface())
		}
	}
	return b.String()
}

func TestVersionTable_Golden(t *testing.T) {
	got := dumpVersionTable()
	path := filepath.Join("testdata", "versions.golden")
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./rooms -run TestVersionTable_Golden -update)", err)
	}
	if got != string(want) {
		t.Fatalf("version table changed; review and run with -update.\ngot:\n%s\nwant:\n%s", got, want)
	}
}

func TestLookupVersion(t *testing.T) {
	for _, id := range SupportedVersionIDs() {
		v, err := LookupVersion(id)
		if err != nil || v.ID != id {
			t.Fatalf("LookupVersion(%q) = %v, %v", id, v.ID, err)
		}
		if !ValidVersionID(id) {
			t.Fatalf("table ID %q breaks the room version grammar", id)
		}
	}
	cases := []struct {
		id   string
		want string
	}{
		{"11", `unsupported room version "11" (Ferry supports 10, 12)`},
		{"I.1", `that is the IETF name of room version 10`},
		{"", `invalid room version ""`},
		{"V10", `invalid room version "V10"`},
		{strings.Repeat("1", 33), `1 to 32 characters`},
	}
	for _, c := range cases {
		_, err := LookupVersion(c.id)
		var uv *UnsupportedVersionError
		if !errors.Is(err, ErrUnsupportedVersion) || !errors.As(err, &uv) || uv.Version != c.id {
			t.Fatalf("LookupVersion(%q) error %v", c.id, err)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("LookupVersion(%q) error %q does not say %q", c.id, err, c.want)
		}
	}
}

func TestVersionTable_Immutable(t *testing.T) {
	v, _ := LookupVersion("10")
	v.Redaction = RedactionV11
	v.Label = "changed"
	again, _ := LookupVersion("10")
	if again.Redaction != RedactionV9 || again.Label != "LTS" {
		t.Fatal("a caller's copy changed the table")
	}
	// The flags that tell 10 and 12 apart, as issue 3 and DESIGN.md list them.
	v10, v12 := mustVersion(t, "10"), mustVersion(t, "12")
	if v10.IETFName != "I.1" || v10.Label != "LTS" || !v10.CreateHasCreator || !v10.CreateInAuthEvents || v10.RoomIDs != RoomIDOpaque || v10.StateRes != StateResV2 {
		t.Fatalf("version 10 row: %+v", v10)
	}
	if v12.IETFName != "" || v12.CreateHasCreator || v12.CreateInAuthEvents || v12.RoomIDs != RoomIDFromCreate || v12.StateRes != StateResV21 || v12.Creators != CreatorSenderPrivileged || !v12.RedactsInContent {
		t.Fatalf("version 12 row: %+v", v12)
	}
}

// versionLiteral matches string literals that could be room version IDs:
// the known versions 1 to 12, MIMI names and unstable identifiers.
var versionLiteral = regexp.MustCompile(`^(?:[1-9]|1[0-9]|I\.[0-9]+|org\.matrix\.[a-z0-9.-]+)$`)

// versionish reports whether an expression's source names a room version.
func versionish(src string) bool {
	lower := strings.ToLower(src)
	return strings.Contains(lower, "version") || strings.HasSuffix(src, ".ID") || strings.Contains(lower, "roomver")
}

// TestNoVersionStringComparisons scans every non-test Go file of the
// module for a room version compared with a string literal (==, != or a
// switch case) outside versions.go: code must ask the version table.
func TestNoVersionStringComparisons(t *testing.T) {
	root := filepath.Join("..")
	fset := token.NewFileSet()
	var found []string
	scanned := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if rel == "rooms/versions.go" {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		file, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
		if err != nil {
			// A file that does not parse fails its package's build,
			// which reports it better than this test could.
			return nil
		}
		scanned++
		for _, hit := range versionComparisons(fset, src, file) {
			found = append(found, fmt.Sprintf("%s:%d: %s", rel, hit.line, hit.expr))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if scanned < 10 {
		t.Fatalf("scanned only %d files; is the module root at ..?", scanned)
	}
	if len(found) > 0 {
		t.Fatalf("room versions compared with string literals outside rooms/versions.go (ask the Version table instead):\n%s", strings.Join(found, "\n"))
	}
}

type versionHit struct {
	line int
	expr string
}

func versionComparisons(fset *token.FileSet, src []byte, file *ast.File) []versionHit {
	text := func(n ast.Node) string {
		return string(src[fset.Position(n.Pos()).Offset:fset.Position(n.End()).Offset])
	}
	isVersionLit := func(e ast.Expr) bool {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return false
		}
		return versionLiteral.MatchString(strings.Trim(lit.Value, "`\""))
	}
	var hits []versionHit
	ast.Inspect(file, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.BinaryExpr:
			if x.Op != token.EQL && x.Op != token.NEQ {
				return true
			}
			if (isVersionLit(x.Y) && versionish(text(x.X))) || (isVersionLit(x.X) && versionish(text(x.Y))) {
				hits = append(hits, versionHit{fset.Position(x.Pos()).Line, text(x)})
			}
		case *ast.SwitchStmt:
			if x.Tag == nil || !versionish(text(x.Tag)) {
				return true
			}
			for _, stmt := range x.Body.List {
				cc, ok := stmt.(*ast.CaseClause)
				if !ok {
					continue
				}
				for _, e := range cc.List {
					if isVersionLit(e) {
						hits = append(hits, versionHit{fset.Position(e.Pos()).Line, "switch " + text(x.Tag) + " case " + text(e)})
					}
				}
			}
		}
		return true
	})
	return hits
}

func TestVersionComparisonScanner(t *testing.T) {
	src := `package p
func f(v Version, roomVersion string, n string) {
	if v.ID == "10" {}
	if "12" != roomVersion {}
	switch v.ID {
	case "10", "12":
	}
	if n == "10" {}
	if v.ID == someConst {}
	if roomVersion == "x" {}
}`
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range versionComparisons(fset, []byte(src), file) {
		got = append(got, h.expr)
	}
	want := []string{`v.ID == "10"`, `"12" != roomVersion`, `switch v.ID case "10"`, `switch v.ID case "12"`}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("scanner found %q, want %q", got, want)
	}
}
