package cli

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
)

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"unknown command", []string{"deploy"}, `unknown command "deploy" for "dockfleet"`},
		{"unknown subcommand", []string{"token", "mint"}, `unknown command "mint" for "dockfleet token"`},
		{"unknown flag", []string{"nodes", "--bogus"}, "unknown flag: --bogus"},
		{"unknown shorthand", []string{"nodes", "-x"}, "unknown shorthand flag: 'x'"},
		{"missing -f", []string{"apply"}, "-f FILE is required"},
		{"-f without value", []string{"apply", "-f"}, "flag needs an argument"},
		{"bad -o", []string{"get", "deployments", "-o", "xml"}, `invalid argument "xml" for "-o, --output" flag: want table, json or yaml`},
		{"bad -o on nodes", []string{"nodes", "-o", "wide"}, "want table, json or yaml"},
		{"get without type", []string{"get"}, "say what to get"},
		{"get unknown type", []string{"get", "pods"}, `unknown object type "pods"`},
		{"get extra args", []string{"get", "deployment", "a", "b"}, "at most one name"},
		{"--deployment on nodes", []string{"get", "nodes", "--deployment", "x"}, "--deployment applies to instances only"},
		{"describe wrong count", []string{"describe", "deployment"}, "accepts 2 arg(s), received 1"},
		{"describe instance", []string{"describe", "instance", "x"}, `unknown object type "instance"`},
		{"delete node", []string{"delete", "node", "x"}, `unknown object type "node"`},
		{"delete extra args", []string{"delete", "deployment", "a", "b"}, "accepts 2 arg(s), received 3"},
		{"nodes extra arg", []string{"nodes", "web-1"}, `unknown command "web-1" for "dockfleet nodes"`},
		{"token revoke no id", []string{"token", "revoke"}, "accepts 1 arg(s), received 0"},
		{"token revoke extra", []string{"token", "revoke", "a", "b"}, "accepts 1 arg(s), received 2"},
		{"token create bad ttl", []string{"token", "create", "--ttl", "soon"}, `invalid argument "soon" for "--ttl" flag`},
		{"token create negative uses", []string{"token", "create", "--uses", "-1"}, "--uses must be at least 1"},
		{"token create no uses", []string{"token", "create", "--uses", "0"}, "--uses must be at least 1"},
		{"token create for ever", []string{"token", "create", "--ttl", "0"}, "--ttl must be above zero"},
		{"token create bad labels", []string{"token", "create", "--labels", "role"}, `label "role": want key=value`},
		{"node label no change", []string{"node", "label", "web-1"}, "requires at least 2 arg(s), only received 1"},
		{"node label malformed", []string{"node", "label", "web-1", "role"}, `label "role": want KEY=VALUE to set or KEY- to remove`},
		{"node label bad key", []string{"node", "label", "web-1", "bad key=x"}, `label "bad key=x": key "bad key"`},
		{"node label bad value", []string{"node", "label", "web-1", "role=-web"}, `label "role=-web": value "-web" must start and end`},
		{"node label bad removal", []string{"node", "label", "web-1", "-"}, `label "-": key ""`},
		{"node label set and remove", []string{"node", "label", "web-1", "role=web", "role-"}, `label "role" is both set and removed`},
		{"node label twice", []string{"node", "label", "web-1", "a=1", "a=2"}, `label "a" is given twice`},
		{"server without data dir", []string{"server"}, "data directory: required (--data-dir)"},
		{"server bad log level", []string{"server", "--data-dir", "x", "--log-level", "loud"}, "want debug, info, warn or error"},
		{"server bad log format", []string{"server", "--data-dir", "x", "--log-format", "xml"}, "want text or json"},
		{"server zero heartbeat", []string{"server", "--data-dir", "x", "--heartbeat-interval", "0s"}, "heartbeat interval 0s: must be positive (--heartbeat-interval)"},
		{"server no missed heartbeats", []string{"server", "--data-dir", "x", "--missed-heartbeats", "0"}, "missed heartbeats 0: must be at least 1 (--missed-heartbeats)"},
		{"server bad int", []string{"server", "--data-dir", "x", "--missed-heartbeats", "three"}, `invalid argument "three"`},
		{"server bad image policy", []string{"server", "--data-dir", "x", "--image-policy", "trustNodes"}, `"trustNodes" is not an image policy; use resolveOnServer, pinFromNodes or unpinned`},
		{"server args", []string{"server", "now"}, `unknown command "now" for "dockfleet server"`},
		{"server unknown store", []string{"server", "--data-dir", "x", "--store", "mysql://u:pw@db/x"},
			`store: unknown kind of store URL "mysql:": use sqlite:PATH, postgres://USER:PASSWORD@HOST:PORT/DATABASE`},
		{"agent without server", []string{"agent", "--data-dir", "x"}, "--server is required"},
		{"agent without data dir", []string{"agent", "--server", "h:7401"}, "--data-dir is required"},
		{"agent bad server in a list", []string{"agent", "--server", "h:7401,other", "--data-dir", "x"}, `--server "other" must name a host and port`},
		{"agent bad repeated server", []string{"agent", "--server", "h:7401", "--server", "other", "--data-dir", "x"}, `--server "other" must name a host and port`},
		{"server negative max agents", []string{"server", "--data-dir", "x", "--max-agents", "-1"}, "max agents -1: must be 0 (no cap) or more (--max-agents)"},
		{"server zero drain", []string{"server", "--data-dir", "x", "--drain-agents-within", "0s"}, "drain agents within 0s: must be positive (--drain-agents-within)"},
		{"agent bad labels", []string{"agent", "--server", "h:7401", "--data-dir", "x", "--labels", "a=b,,c=d"}, "empty label between commas"},
		{"dev bad labels", []string{"dev", "--labels", "Role Name=web"}, `invalid key "Role Name"`},
		{"dev zero resync", []string{"dev", "--resync", "0s"}, "--resync must be above zero"},
		{"version args", []string{"version", "1"}, `unknown command "1" for "dockfleet version"`},
		{"rollout unknown", []string{"rollout", "frobnicate", "web"}, `unknown command "frobnicate" for "dockfleet rollout"`},
		{"rollout status no name", []string{"rollout", "status"}, "accepts 1 arg(s), received 0"},
		{"rollout status bad timeout", []string{"rollout", "status", "web", "-w", "--timeout", "-1s"}, "--timeout must not be negative"},
		{"rollout status timeout without watch", []string{"rollout", "status", "web", "--timeout", "1m"}, "--timeout applies with --watch only"},
		{"rollout status -o with watch", []string{"rollout", "status", "web", "-w", "-o", "json"}, "-o applies without --watch only"},
		{"rollout history no name", []string{"rollout", "history"}, "accepts 1 arg(s), received 0"},
		{"rollout undo no name", []string{"rollout", "undo"}, "accepts 1 arg(s), received 0"},
		{"rollout undo negative", []string{"rollout", "undo", "web", "--to-revision", "-1"}, "--to-revision must not be negative"},
		{"rollout undo bad revision", []string{"rollout", "undo", "web", "--to-revision", "two"}, `invalid argument "two"`},
		{"rollout pause no name", []string{"rollout", "pause"}, "accepts 1 arg(s), received 0"},
		{"rollout abort two names", []string{"rollout", "abort", "a", "b"}, "accepts 1 arg(s), received 2"},
		{"events args", []string{"events", "web"}, `unknown command "web" for "dockfleet events"`},
		{"events bad flag", []string{"events", "-w"}, "unknown shorthand flag: 'w'"},
		{"apply negative timeout", []string{"apply", "-f", "x.yaml", "--wait", "--timeout", "-1s"}, "--timeout must not be negative"},
		{"apply timeout without wait", []string{"apply", "-f", "x.yaml", "--timeout", "1m"}, "--timeout applies with --wait only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Point every command at a closed port: none may get that far.
			r := runCLI(t, map[string]string{envAddr: "https://127.0.0.1:1"}, "", tt.args...)
			if r.code != exitUsage {
				t.Errorf("exit code %d; want %d\nstderr: %s", r.code, exitUsage, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr %q; want an error: line containing %q", r.stderr, tt.want)
			}
			if !strings.Contains(r.stderr, "--help' for usage.") {
				t.Errorf("stderr %q does not point to --help", r.stderr)
			}
		})
	}
}

func TestHelpAndVersion(t *testing.T) {
	tests := []struct {
		args []string
		want string // in stdout
	}{
		{nil, "Available Commands:"},
		{[]string{"--help"}, "Available Commands:"},
		{[]string{"token"}, "dockfleet token [command]"},
		{[]string{"node"}, "dockfleet node [command]"},
		{[]string{"rollout"}, "dockfleet rollout [command]"},
		{[]string{"get", "--help"}, "dockfleet get deployments|instances|nodes [NAME]"},
		{[]string{"version"}, "dockfleet "},
		{[]string{"--version"}, "dockfleet "},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runCLI(t, nil, "", tt.args...)
			if r.code != exitOK || !strings.Contains(r.stdout, tt.want) {
				t.Errorf("got exit code %d, stdout %q; want 0 and %q", r.code, r.stdout, tt.want)
			}
		})
	}
}

func TestConnConfig(t *testing.T) {
	dir := t.TempDir()
	flagTokenFile := filepath.Join(dir, "flag.token")
	envTokenFileName := filepath.Join(dir, "env.token")
	for file, tok := range map[string]string{flagTokenFile: "from-flag-file\n", envTokenFileName: "  from-env-file  \n"} {
		if err := os.WriteFile(file, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	allEnv := map[string]string{
		envAddr: "https://env:7400", envToken: "from-env", envTokenFile: envTokenFileName,
		envCACert: "/env/ca.crt", envProject: "env-project",
	}
	tests := []struct {
		name        string
		args        []string
		env         map[string]string
		want        client.Config
		wantProject string
	}{
		{
			name:        "defaults",
			want:        client.Config{Addr: client.DefaultAddr},
			wantProject: api.DefaultProject,
		},
		{
			name:        "environment",
			env:         allEnv,
			want:        client.Config{Addr: "https://env:7400", Token: "from-env", CACertFile: "/env/ca.crt"},
			wantProject: "env-project",
		},
		{
			name:        "flags win over the environment",
			args:        []string{"--addr", "https://flag:7400", "--token", "from-flag", "--ca-cert", "/flag/ca.crt", "-p", "flag-project"},
			env:         allEnv,
			want:        client.Config{Addr: "https://flag:7400", Token: "from-flag", CACertFile: "/flag/ca.crt"},
			wantProject: "flag-project",
		},
		{
			name:        "--token-file wins over DOCKFLEET_TOKEN",
			args:        []string{"--token-file", flagTokenFile},
			env:         allEnv,
			want:        client.Config{Addr: "https://env:7400", Token: "from-flag-file", CACertFile: "/env/ca.crt"},
			wantProject: "env-project",
		},
		{
			name:        "--token wins over --token-file",
			args:        []string{"--token", "from-flag", "--token-file", flagTokenFile},
			want:        client.Config{Addr: client.DefaultAddr, Token: "from-flag"},
			wantProject: api.DefaultProject,
		},
		{
			name:        "DOCKFLEET_TOKEN_FILE when no token is set",
			env:         map[string]string{envTokenFile: envTokenFileName},
			want:        client.Config{Addr: client.DefaultAddr, Token: "from-env-file"},
			wantProject: api.DefaultProject,
		},
		{
			name:        "an empty --token clears the environment's",
			args:        []string{"--token", ""},
			env:         map[string]string{envToken: "from-env"},
			want:        client.Config{Addr: client.DefaultAddr},
			wantProject: api.DefaultProject,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{getenv: func(k string) string { return tt.env[k] }}
			var (
				got     client.Config
				project string
			)
			cmd := &cobra.Command{
				Use: "x",
				RunE: func(cmd *cobra.Command, _ []string) (err error) {
					got, project, err = e.connConfig(cmd)
					return err
				},
			}
			e.addConnFlags(cmd.Flags(), true)
			cmd.SetArgs(append([]string{}, tt.args...))
			if err := cmd.Execute(); err != nil {
				t.Fatal(err)
			}
			if got.Addr != tt.want.Addr || got.Token != tt.want.Token || got.CACertFile != tt.want.CACertFile {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
			if project != tt.wantProject {
				t.Errorf("got project %q; want %q", project, tt.wantProject)
			}
		})
	}
}

// TestEnvironmentReachesServer runs a command configured only by the
// environment, with the token in a file.
func TestEnvironmentReachesServer(t *testing.T) {
	f := newFakeAPI(t)
	f.on("GET /v1/projects/ops/deployments", http.StatusOK, []api.Deployment{})
	f.on("GET /v1/projects/ops/instances", http.StatusOK, []api.Instance{})
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{envAddr: f.srv.URL, envCACert: f.caFile, envTokenFile: tokenFile, envProject: "ops"}
	r := runCLI(t, vars, "", "get", "deployments")
	checkOutput(t, r, exitOK, "NAME   MODE   REPLICAS   IMAGE   REVISION   AGE\n")
	for _, req := range f.requests() {
		if req.Auth != "Bearer "+testToken {
			t.Errorf("%s %s: Authorization %q; want the token file's", req.Method, req.Path, req.Auth)
		}
	}
}

func TestUnreachableServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "https://" + l.Addr().String()
	l.Close()
	r := runCLI(t, map[string]string{envAddr: addr}, "", "nodes")
	want := "error: cannot reach dockfleet server at " + addr + ": dial tcp " + l.Addr().String() + ": connect: connection refused\n"
	if r.code != exitFailure || r.stderr != want {
		t.Errorf("got exit code %d, stderr %q; want %d, %q", r.code, r.stderr, exitFailure, want)
	}
}

func TestUntrustedServer(t *testing.T) {
	f := newFakeAPI(t)
	r := runCLI(t, map[string]string{envAddr: f.srv.URL}, "", "nodes")
	if r.code != exitFailure || !strings.Contains(r.stderr, "--ca-cert") || !strings.Contains(r.stderr, f.srv.URL) {
		t.Errorf("got exit code %d, stderr %q; want 1 and a hint at --ca-cert naming %s", r.code, r.stderr, f.srv.URL)
	}
}

func TestUnauthorized(t *testing.T) {
	f := newFakeAPI(t)
	f.on("GET /v1/nodes", http.StatusUnauthorized, api.Error{Error: "missing or unknown bearer token"})
	r := runCLI(t, nil, "", "nodes", "--addr", f.srv.URL, "--ca-cert", f.caFile)
	if r.code != exitFailure {
		t.Errorf("exit code %d; want %d", r.code, exitFailure)
	}
	if !strings.HasPrefix(r.stderr, "error: missing or unknown bearer token\nhint: ") || !strings.Contains(r.stderr, "DOCKFLEET_TOKEN") {
		t.Errorf("stderr %q; want the server's error and a hint at DOCKFLEET_TOKEN", r.stderr)
	}
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].Auth != "" {
		t.Errorf("requests %+v; want one without Authorization", reqs)
	}
}

func TestNotFound(t *testing.T) {
	f := newFakeAPI(t)
	f.on("GET /v1/projects/default/deployments/nope", http.StatusNotFound, api.Error{Error: `deployment "nope" not found in project "default"`})
	r := runCLI(t, nil, "", f.args("get", "deployment", "nope")...)
	want := "error: deployment \"nope\" not found in project \"default\"\n"
	if r.code != exitFailure || r.stderr != want {
		t.Errorf("got exit code %d, stderr %q; want 1, %q", r.code, r.stderr, want)
	}
}

func TestTokenFileMissing(t *testing.T) {
	r := runCLI(t, nil, "", "nodes", "--token-file", filepath.Join(t.TempDir(), "none"))
	if r.code != exitFailure || !strings.Contains(r.stderr, "reading token file") {
		t.Errorf("got exit code %d, stderr %q; want 1 and the file's error", r.code, r.stderr)
	}
}
