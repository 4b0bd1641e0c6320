package config

// The files people deploy Ferry with (the Dockerfile, deploy/ and the
// configuration reference) are configuration too: these tests hold them
// to the Config struct and to each other, so that a renamed key, a
// misspelt variable or a lost hardening option fails CI instead of a
// deployment. Docker and systemd do not run here; what they would read is
// parsed and checked instead.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"gopkg.in/yaml.v3"
)

// repoRoot is the repository root as seen from this package's directory,
// where `go test` runs its tests.
const repoRoot = ".."

// dockerImage is the image name the Dockerfile's build command, the
// compose file and docs/deployment.md all use.
const dockerImage = "ferry"

func readRepoFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// mapEnv turns a map into the LookupEnv Load takes.
func mapEnv(env map[string]string) LookupEnv {
	return func(key string) (string, bool) { v, ok := env[key]; return v, ok }
}

// --- deploy/ferry.toml ---------------------------------------------------

// TestDeployExample_Loads parses deploy/ferry.toml with the real loader
// and checks that it sets every key the Config struct has, and no other.
func TestDeployExample_Loads(t *testing.T) {
	cfg, err := Load(filepath.Join(repoRoot, "deploy", "ferry.toml"), nil)
	if err != nil {
		t.Fatalf("deploy/ferry.toml does not load: %v", err)
	}
	if cfg.Federation.VerifyTLS != true || cfg.Federation.AllowPrivateAddresses {
		t.Error("the example for a public server must verify TLS and refuse private addresses")
	}

	var doc map[string]any
	if _, err := toml.Decode(string(readRepoFile(t, "deploy/ferry.toml")), &doc); err != nil {
		t.Fatal(err)
	}
	var written []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			key := prefix + k
			if sub, ok := v.(map[string]any); ok {
				walk(key+".", sub)
				continue
			}
			written = append(written, key)
		}
	}
	walk("", doc)
	slices.Sort(written)
	want := Keys()
	slices.Sort(want)
	if !slices.Equal(written, want) {
		t.Errorf("deploy/ferry.toml sets %v\nthe Config struct has %v", written, want)
	}
}

// --- docs/configuration.md -----------------------------------------------

// tomlValue writes a default the way the configuration file spells it.
func tomlValue(v reflect.Value) string {
	switch v.Kind() {
	case reflect.String:
		return quote(v.String())
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Slice:
		return quoteList(v.Interface().([]string))
	default:
		return fmt.Sprintf("(a %s: teach tomlValue)", v.Kind())
	}
}

// TestDocsConfiguration holds docs/configuration.md to the Config struct:
// one table row per key, giving the key, its environment variable and its
// default exactly, and a meaning; no row for a key that does not exist.
func TestDocsConfiguration(t *testing.T) {
	doc := string(readRepoFile(t, "docs/configuration.md"))
	rows := map[string][]string{} // key -> cells
	for line := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows[strings.Trim(cells[0], "`")] = cells
	}
	known := map[string]bool{}
	for _, f := range fields(Default()) {
		known[f.key] = true
		cells, ok := rows[f.key]
		want := fmt.Sprintf("| `%s` | `%s` | `%s` | <meaning> |", f.key, f.env, tomlValue(f.value))
		if !ok {
			t.Errorf("docs/configuration.md has no row for %s; add:\n%s", f.key, want)
			continue
		}
		if len(cells) != 4 || cells[1] != "`"+f.env+"`" || cells[2] != "`"+tomlValue(f.value)+"`" || len(cells[3]) < 10 {
			t.Errorf("docs/configuration.md row for %s is\n%s\nwant\n%s", f.key, "| "+strings.Join(cells, " | ")+" |", want)
		}
	}
	for key := range rows {
		if !known[key] {
			t.Errorf("docs/configuration.md documents %q, which is not a configuration key", key)
		}
	}
}

// --- Dockerfile ----------------------------------------------------------

// instruction is one Dockerfile instruction with its continuation lines
// joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// parseDockerfile splits a Dockerfile into stages of instructions. It
// knows what this repository's Dockerfile uses: comments, backslash
// continuations, one instruction per logical line.
func parseDockerfile(t *testing.T, text string) [][]instruction {
	t.Helper()
	var stages [][]instruction
	var logical strings.Builder
	flush := func() {
		line := strings.TrimSpace(logical.String())
		logical.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile: %s before the first FROM", in.cmd)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	for raw := range strings.SplitSeq(text, "\n") {
		line := strings.TrimSpace(raw)
		if strings.HasPrefix(line, "#") {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			logical.WriteString(cont + " ")
			continue
		}
		logical.WriteString(line)
		flush()
	}
	flush()
	return stages
}

// execForm decodes a JSON-array (exec form) argument.
func execForm(t *testing.T, what, args string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		t.Errorf("Dockerfile %s %s: not exec form (a JSON array), so it would need a shell the image does not have", what, args)
	}
	return argv
}

// envAssignments parses ENV's key=value pairs, values optionally quoted.
func envAssignments(t *testing.T, args string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, pair := range strings.Fields(args) {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			t.Errorf("Dockerfile ENV %q: use the key=value form", args)
			continue
		}
		out[k] = strings.Trim(v, `"`)
	}
	return out
}

// dockerfileEnv returns the final stage's ENV, as every container (and
// its HEALTHCHECK) sees it.
func dockerfileEnv(t *testing.T) map[string]string {
	t.Helper()
	stages := parseDockerfile(t, string(readRepoFile(t, "Dockerfile")))
	env := map[string]string{}
	for _, in := range stages[len(stages)-1] {
		if in.cmd == "ENV" {
			for k, v := range envAssignments(t, in.args) {
				env[k] = v
			}
		}
	}
	return env
}

// buildCommand returns the `CGO_ENABLED=0 go build ... ./cmd/ferry`
// command line in text, with its output path replaced by OUT, which is
// the only part allowed to differ between the Dockerfile and .ci/run.
func buildCommand(t *testing.T, name, text string) string {
	t.Helper()
	re := regexp.MustCompile(`CGO_ENABLED=0 go build [^\n]*? \./cmd/ferry`)
	found := re.FindAllString(text, -1)
	if len(found) != 1 {
		t.Fatalf("%s: want exactly one `CGO_ENABLED=0 go build ... ./cmd/ferry`, found %q", name, found)
	}
	return regexp.MustCompile(`-o \S+`).ReplaceAllString(found[0], "-o OUT")
}

func TestDockerfile(t *testing.T) {
	text := string(readRepoFile(t, "Dockerfile"))
	stages := parseDockerfile(t, text)
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s); want a build stage and a minimal final stage", len(stages))
	}
	final := stages[len(stages)-1]
	args := func(cmd string) []string {
		var out []string
		for _, in := range final {
			if in.cmd == cmd {
				out = append(out, in.args)
			}
		}
		return out
	}
	one := func(cmd string) string {
		all := args(cmd)
		if len(all) != 1 {
			t.Errorf("final stage: want one %s, have %q", cmd, all)
			return ""
		}
		return all[0]
	}

	if base := final[0].args; base != "scratch" && !strings.HasPrefix(base, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %s: want scratch or distroless/static", base)
	}

	// Non-root, numerically (scratch has no /etc/passwd to look a name up).
	user := one("USER")
	uid, gid, _ := strings.Cut(user, ":")
	for _, id := range []string{uid, gid} {
		if n, err := strconv.Atoi(id); err != nil || n == 0 {
			t.Errorf("USER %s: want numeric non-root uid:gid", user)
		}
	}

	if got := one("VOLUME"); got != "/data" && got != `["/data"]` {
		t.Errorf("VOLUME %s, want /data", got)
	}
	if got := one("WORKDIR"); got != "/data" {
		t.Errorf("WORKDIR %s, want /data (ferry serve reads ./ferry.toml)", got)
	}

	copied := map[string]bool{}
	for _, c := range args("COPY") {
		f := strings.Fields(c)
		copied[f[len(f)-1]] = true
	}
	for _, dst := range []string{"/usr/local/bin/ferry", "/etc/ssl/certs/ca-certificates.crt", "/data"} {
		if !copied[dst] {
			t.Errorf("final stage copies nothing to %s", dst)
		}
	}

	if argv := execForm(t, "ENTRYPOINT", one("ENTRYPOINT")); !slices.Equal(argv, []string{"/usr/local/bin/ferry"}) {
		t.Errorf("ENTRYPOINT %q", argv)
	}
	if argv := execForm(t, "CMD", one("CMD")); !slices.Equal(argv, []string{"serve"}) {
		t.Errorf("CMD %q, want [serve]", argv)
	}
	health := one("HEALTHCHECK")
	_, cmd, ok := strings.Cut(health, "CMD ")
	if !ok {
		t.Errorf("HEALTHCHECK %s has no CMD", health)
	} else if argv := execForm(t, "HEALTHCHECK", cmd); !slices.Equal(argv, []string{"/usr/local/bin/ferry", "healthcheck"}) {
		t.Errorf("HEALTHCHECK runs %q, want the binary's own `ferry healthcheck`", argv)
	}
	if !strings.Contains(text, "docker build -t "+dockerImage+" ") {
		t.Errorf("the Dockerfile's header should show `docker build -t %s`", dockerImage)
	}

	// `docker run -e FERRY_SERVER_NAME=example.org` must be a whole,
	// valid configuration on top of the image's ENV, listening on the
	// exposed port with its data in the volume.
	env := dockerfileEnv(t)
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	if unknown := UnknownEnv(environ); len(unknown) > 0 {
		t.Errorf("Dockerfile sets %v, which match no configuration key", unknown)
	}
	env["FERRY_SERVER_NAME"] = "example.org"
	cfg, err := Load("", mapEnv(env))
	if err != nil {
		t.Fatalf("the image's environment plus FERRY_SERVER_NAME is not a valid configuration: %v", err)
	}
	if cfg.DataDir != "/data" {
		t.Errorf("data_dir in the image is %q, want /data", cfg.DataDir)
	}
	host, port, _ := net.SplitHostPort(cfg.Federation.Listen)
	if host != "0.0.0.0" && host != "" {
		t.Errorf("federation.listen in the image is %s: other containers could not reach it", cfg.Federation.Listen)
	}
	if expose := one("EXPOSE"); expose != port && expose != port+"/tcp" {
		t.Errorf("EXPOSE %s, but federation.listen is %s", expose, cfg.Federation.Listen)
	}

	// The binary CI builds and measures is the one in the image.
	docker := buildCommand(t, "Dockerfile", text)
	ci := buildCommand(t, ".ci/run", string(readRepoFile(t, ".ci/run")))
	if docker != ci {
		t.Errorf("the Dockerfile builds with\n  %s\nbut .ci/run with\n  %s", docker, ci)
	}
	for _, flag := range []string{"-trimpath", `-ldflags "-s -w -X main.version=${VERSION}"`} {
		if !strings.Contains(docker, flag) {
			t.Errorf("Dockerfile build %s lacks %s", docker, flag)
		}
	}
}

// TestDockerignore keeps local state out of the build context: a data
// directory holds the signing key and host API token.
func TestDockerignore(t *testing.T) {
	lines := map[string]bool{}
	for line := range strings.SplitSeq(string(readRepoFile(t, ".dockerignore")), "\n") {
		lines[strings.TrimSpace(line)] = true
	}
	for _, want := range []string{".git", "**/ferry-data", "**/signing.key", "**/old_signing.keys", "**/host_token", "**/*.db"} {
		if !lines[want] {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
	for _, needed := range []string{"go.mod", "go.sum", "cmd", "*.go", "**/*.go"} {
		if lines[needed] {
			t.Errorf(".dockerignore excludes %s, which the build needs", needed)
		}
	}
}

// --- deploy/compose.yaml -------------------------------------------------

// composeFile is the part of the Compose specification deploy/compose.yaml
// uses; decoding with KnownFields catches misspelt keys.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Hostname    string            `yaml:"hostname"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Restart string `yaml:"restart"`
}

func TestCompose(t *testing.T) {
	dec := yaml.NewDecoder(bytes.NewReader(readRepoFile(t, "deploy/compose.yaml")))
	dec.KnownFields(true)
	var compose composeFile
	if err := dec.Decode(&compose); err != nil {
		t.Fatalf("deploy/compose.yaml: %v", err)
	}
	if len(compose.Services) < 2 {
		t.Fatalf("deploy/compose.yaml runs %d server(s); the demo federates two", len(compose.Services))
	}

	image := dockerfileEnv(t)
	serverNames := map[string]string{}
	hostPorts := map[string]string{}
	dataVolumes := map[string]string{}
	for name, svc := range compose.Services {
		if svc.Image != dockerImage {
			t.Errorf("%s: image %q, want %q (the Dockerfile's)", name, svc.Image, dockerImage)
		}
		if svc.Build.Context == "" {
			t.Errorf("%s: no build context: compose would try to pull %q from a registry", name, svc.Image)
		} else if _, err := os.Stat(filepath.Join(repoRoot, "deploy", svc.Build.Context, svc.Build.Dockerfile)); err != nil {
			t.Errorf("%s: build %s/%s: %v", name, svc.Build.Context, svc.Build.Dockerfile, err)
		}
		for dep, cond := range svc.DependsOn {
			if _, ok := compose.Services[dep]; !ok || cond.Condition != "service_healthy" && cond.Condition != "service_started" {
				t.Errorf("%s: depends_on %s (%s)", name, dep, cond.Condition)
			}
		}

		// The container's configuration: the image's ENV, overridden by
		// the service's environment.
		var environ []string
		env := map[string]string{}
		for k, v := range image {
			env[k] = v
		}
		for k, v := range svc.Environment {
			environ = append(environ, k+"="+v)
			env[k] = v
		}
		if unknown := UnknownEnv(environ); len(unknown) > 0 {
			t.Errorf("%s: %v match no configuration key", name, unknown)
		}
		for k := range svc.Environment {
			if !strings.HasPrefix(k, EnvPrefix) {
				t.Errorf("%s: %s is not a Ferry variable", name, k)
			}
		}
		cfg, err := Load("", mapEnv(env))
		if err != nil {
			t.Errorf("%s: its environment is not a valid configuration: %v", name, err)
			continue
		}
		// The other server finds this one by its server name: it must be
		// the service's name on the compose network, with the port the
		// container listens on, so no delegation lookup is needed.
		host, port, err := net.SplitHostPort(cfg.ServerName)
		_, listenPort, _ := net.SplitHostPort(cfg.Federation.Listen)
		if err != nil || (host != name && host != svc.Hostname) || port != listenPort {
			t.Errorf("%s: server_name %q should be <service name>:%s", name, cfg.ServerName, listenPort)
		}
		if other, dup := serverNames[cfg.ServerName]; dup {
			t.Errorf("%s and %s share server_name %s", name, other, cfg.ServerName)
		}
		serverNames[cfg.ServerName] = name
		if cfg.Federation.VerifyTLS || !cfg.Federation.AllowPrivateAddresses {
			t.Errorf("%s: two servers with self-signed certificates on a private network need verify_tls = false and allow_private_addresses = true", name)
		}
		_, hostAPIPort, _ := net.SplitHostPort(cfg.Host.Listen)
		published := false
		for _, p := range svc.Ports {
			parts := strings.Split(p, ":")
			if len(parts) != 3 || parts[0] != "127.0.0.1" {
				t.Errorf("%s: port %q: publish on 127.0.0.1 only (ip:host:container)", name, p)
				continue
			}
			if other, dup := hostPorts[parts[1]]; dup {
				t.Errorf("%s and %s both publish host port %s", name, other, parts[1])
			}
			hostPorts[parts[1]] = name
			published = published || parts[2] == hostAPIPort
		}
		if !published {
			t.Errorf("%s: the host API (%s) is not published", name, cfg.Host.Listen)
		}
		mounted := false
		for _, v := range svc.Volumes {
			volume, target, _ := strings.Cut(v, ":")
			if target != cfg.DataDir {
				continue
			}
			mounted = true
			if _, declared := compose.Volumes[volume]; !declared {
				t.Errorf("%s: volume %s is not declared", name, volume)
			}
			if other, dup := dataVolumes[volume]; dup {
				t.Errorf("%s and %s share the data volume %s (and so a signing key)", name, other, volume)
			}
			dataVolumes[volume] = name
		}
		if !mounted {
			t.Errorf("%s: nothing mounted at data_dir %s", name, cfg.DataDir)
		}
	}
}

// --- deploy/ferry.service ------------------------------------------------

// parseUnit reads a systemd unit's [Service] section: each key with every
// value it is given, in order.
func parseUnit(text string) map[string][]string {
	service := map[string][]string{}
	section := ""
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, _ := strings.Cut(line, "=")
			service[k] = append(service[k], v)
		}
	}
	return service
}

func TestSystemdUnit(t *testing.T) {
	text := string(readRepoFile(t, "deploy/ferry.service"))
	service := parseUnit(text)
	last := func(key string) string {
		v := service[key]
		if len(v) == 0 {
			return "<unset>"
		}
		return v[len(v)-1]
	}
	for key, want := range map[string]string{
		"NoNewPrivileges":        "true",
		"ProtectSystem":          "strict",
		"ProtectHome":            "true",
		"PrivateTmp":             "true",
		"PrivateDevices":         "true",
		"ProtectKernelTunables":  "true",
		"ProtectKernelModules":   "true",
		"ProtectControlGroups":   "true",
		"RestrictNamespaces":     "true",
		"RestrictSUIDSGID":       "true",
		"LockPersonality":        "true",
		"MemoryDenyWriteExecute": "true",
		"CapabilityBoundingSet":  "",
		"StateDirectory":         "ferry",
		"ReadWritePaths":         "/var/lib/ferry",
		"ExecReload":             "/bin/kill -HUP $MAINPID",
	} {
		if got := last(key); got != want {
			t.Errorf("%s=%s, want %s=%s", key, got, key, want)
		}
	}
	if families := strings.Fields(last("RestrictAddressFamilies")); !slices.Equal(families, []string{"AF_INET", "AF_INET6", "AF_UNIX"}) {
		t.Errorf("RestrictAddressFamilies=%v", families)
	}
	if !slices.Contains(service["SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter=%v lacks @system-service", service["SystemCallFilter"])
	}
	if user := last("User"); user == "<unset>" || user == "root" || user == "0" {
		if last("DynamicUser") != "true" {
			t.Errorf("User=%s: run as a dedicated user", user)
		}
	}

	// ExecStart runs `ferry serve` on the configuration the header installs
	// (deploy/ferry.toml), whose data_dir is the StateDirectory and whose
	// port needs no capability.
	argv := strings.Fields(last("ExecStart"))
	if len(argv) < 2 || filepath.Base(argv[0]) != "ferry" || argv[1] != "serve" {
		t.Fatalf("ExecStart=%s does not run `ferry serve`", last("ExecStart"))
	}
	configFile := ""
	for i, a := range argv {
		if (a == "-config" || a == "--config") && i+1 < len(argv) {
			configFile = argv[i+1]
		}
	}
	if configFile == "" {
		t.Fatalf("ExecStart=%s names no -config file", last("ExecStart"))
	}
	if !strings.Contains(text, "deploy/ferry.toml "+configFile) {
		t.Errorf("the unit's install steps do not put deploy/ferry.toml at %s", configFile)
	}
	cfg, err := Load(filepath.Join(repoRoot, "deploy", "ferry.toml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/var/lib/"+last("StateDirectory") || last("WorkingDirectory") != cfg.DataDir {
		t.Errorf("deploy/ferry.toml data_dir %s, StateDirectory=%s, WorkingDirectory=%s: want the same directory",
			cfg.DataDir, last("StateDirectory"), last("WorkingDirectory"))
	}
	_, port, _ := net.SplitHostPort(cfg.Federation.Listen)
	if n, _ := strconv.Atoi(port); n < 1024 && last("CapabilityBoundingSet") == "" {
		t.Errorf("federation.listen %s is a privileged port but the unit grants no CAP_NET_BIND_SERVICE", cfg.Federation.Listen)
	}
}

// TestDocs_ImageName keeps the deployment guide's commands on the image
// name the Dockerfile and compose file use.
func TestDocs_ImageName(t *testing.T) {
	doc := string(readRepoFile(t, "docs/deployment.md"))
	if !strings.Contains(doc, "docker build -t "+dockerImage+" ") {
		t.Errorf("docs/deployment.md does not show `docker build -t %s`", dockerImage)
	}
	for _, path := range []string{"deploy/compose.yaml", "deploy/ferry.service", "deploy/ferry.toml", "docs/configuration.md", "docs/troubleshooting.md"} {
		if !strings.Contains(doc, path) && !strings.Contains(doc, filepath.Base(path)) {
			t.Errorf("docs/deployment.md never mentions %s", path)
		}
	}
}
