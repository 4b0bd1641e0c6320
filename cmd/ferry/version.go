package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/ferry-matrix/ferry/rooms"
)

// version is set at build time with -ldflags "-X main.version=v0.1.0".
// When it is empty, the module version from the build info is used
// (set by `go install module@version`), else "dev".
var version string

func versionString() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "dev"
}

func init() {
	registerCommand("version", "print the version and the room versions supported", runVersion)
}

func runVersion(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: ferry version")
		return 2
	}
	fmt.Fprintf(stdout, "ferry %s (%s)\n", versionString(), runtime.Version())
	fmt.Fprint(stdout, "room versions:")
	for i, v := range rooms.SupportedVersions() {
		if i > 0 {
			fmt.Fprint(stdout, ",")
		}
		fmt.Fprintf(stdout, " %s", v)
	}
	fmt.Fprintln(stdout)
	return 0
}
