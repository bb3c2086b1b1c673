package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/servertest"
)

// TestCACommands rotates a server's CA with the CLI: status, rotate, a
// second rotate refused, the bundle of both roots, finish, and the CLI
// going on with the new bundle as its --ca-cert.
func TestCACommands(t *testing.T) {
	srv := servertest.Start(t, nil)
	vars := map[string]string{envAddr: srv.Server.APIURL(), envToken: srv.AdminToken, envCACert: srv.CAFile}
	run := func(want int, args ...string) result {
		t.Helper()
		r := runCLI(t, vars, "", args...)
		if r.code != want {
			t.Fatalf("dockfleet %s: exit %d; want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
		}
		return r
	}

	r := run(exitOK, "ca", "status")
	for _, want := range []string{"ROOT (SHA-256)", "active", "No rotation in progress", "New enrollment tokens carry the CA fingerprint"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("ca status said %q; want %q in it", r.stdout, want)
		}
	}
	r = run(exitOK, "ca", "rotate")
	for _, want := range []string{"CA rotation started", "retiring", "Rotation in progress", "dockfleet ca finish"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("ca rotate said %q; want %q in it", r.stdout, want)
		}
	}
	r = run(exitFailure, "ca", "rotate")
	if !strings.Contains(r.stderr, "in progress already") {
		t.Errorf("a second ca rotate said %q; want it refused as in progress", r.stderr)
	}
	r = run(exitOK, "ca", "bundle")
	if n := strings.Count(r.stdout, "BEGIN CERTIFICATE"); n != 2 {
		t.Errorf("ca bundle during a rotation printed %d certificates; want 2", n)
	}
	bundle := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(bundle, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(exitOK, "ca", "finish", "-o", "json")
	if !strings.Contains(r.stdout, `"state": "retired"`) || !strings.Contains(r.stdout, `"rotating": false`) {
		t.Errorf("ca finish -o json said %q; want the old root retired, no rotation", r.stdout)
	}
	vars[envCACert] = bundle // the CLI's copy from before the finish
	r = run(exitOK, "ca", "status")
	if !strings.Contains(r.stdout, "retired") || !strings.Contains(r.stdout, "No rotation in progress") {
		t.Errorf("ca status after the finish said %q; want a retired root and no rotation", r.stdout)
	}
	r = run(exitFailure, "ca", "finish")
	if !strings.Contains(r.stderr, "no CA rotation is in progress") {
		t.Errorf("ca finish with no rotation said %q; want it refused", r.stderr)
	}
}
