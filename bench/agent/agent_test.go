package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/moby/client"
	"go.uber.org/goleak"

	"github.com/dockfleet/dockfleet/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-n", "3", "-o", "json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.n != 3 || cfg.output != "json" || !cfg.gctrace || cfg.runID == "" || cfg.command != "go run ./bench/agent -n 3 -o json" {
		t.Errorf("parseFlags = %+v", cfg)
	}
	for _, args := range [][]string{
		{"-n", "0"},
		{"-o", "yaml"},
		{"-settle", "-1s"},
		{"-window", "0s"},
		{"-interval", "0s"},
		{"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error; want one", args)
		}
	}
}

func TestAgentLog(t *testing.T) {
	var l agentLog
	for _, line := range []string{
		`time=2026-11-25T02:50:49.1Z level=INFO msg="instance state" node_id=n1 instance_id=i1 state=running reason=""`,
		`gc 6 @10.021s 0%: 0.036+1.2+0.004 ms clock, 0.072+0.31/0.52/0+0.008 ms cpu, 3->3->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P`,
		`time=2026-11-25T02:50:49.2Z level=INFO msg="instance state" node_id=n1 instance_id=i1 state=healthy reason=""`,
		`gc 7 @130.1s 0%: 0.02+1.1+0.003 ms clock, 0.05+0/0.4/0+0.006 ms cpu, 2->2->2 MB, 5 MB goal, 1 MB stacks, 0 MB globals, 2 P (forced)`,
		`time=2026-11-25T02:50:50Z level=INFO msg=connected server=127.0.0.1:7401`,
	} {
		l.line([]byte(line))
	}
	states, gc := l.snapshot()
	want := gcLine{n: 7, live: 2 << 20, goal: 5 << 20, stacks: 1 << 20}
	if states != 2 || gc != want {
		t.Errorf("snapshot = %d states, %+v; want 2, %+v", states, gc, want)
	}
}

func TestTable(t *testing.T) {
	r := &report{N: 20, Image: "hello:v1", CheckInterval: "2s", GCTrace: true, Targets: designTargets,
		Command: "go run ./bench/agent", Setup: setupResult{EnrollSeconds: 0.1, HealthySeconds: 4},
		Idle: &idleResult{RSSBytes: 26 << 20, RSSAnonBytes: 8 << 20, RSSFileBytes: 18 << 20, HWMBytes: 27 << 20,
			CPUPercent: 0.5, WindowSeconds: 60, HealthyAtEnd: 20, GC: &gcResult{LastHeapLiveBytes: 2 << 20}}}
	var b bytes.Buffer
	r.WriteTable(&b)
	out := b.String()
	for _, want := range []string{"26.0 MiB (anonymous 8.0 MiB, file 18.0 MiB)", "≤ 20.0 MiB  MISSED", "0.50 % of one core over 60 s",
		"≤ 1 %  met", "live 2.0 MiB", "20 of 20 healthy"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// Below the number of containers the targets are set for, no verdicts.
	r.N = 3
	b.Reset()
	r.WriteTable(&b)
	if out := b.String(); strings.Contains(out, "  met") || strings.Contains(out, "MISSED") {
		t.Errorf("table at 3 containers judges against targets for 20:\n%s", out)
	}
}

// TestSmoke runs the whole benchmark with 3 containers and a short window
// against the real binary, built from this tree, and the real Docker
// daemon: it must complete, clean up, and its JSON must have every section
// with sane values. It asserts no timings (CONTRIBUTING.md). It takes about
// ten seconds; -short skips it, except in CI.
func TestSmoke(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("the smoke test runs a server, an agent and three containers; not with -short")
	}
	testenv.HelloImages(t) // skips without Docker, fails without it in CI
	bin := filepath.Join(t.TempDir(), "dockfleet")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/dockfleet")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building dockfleet: %v\n%s", err, out)
	}

	const n = 3
	var stdout, stderr bytes.Buffer
	code := run([]string{"-n", "3", "-bin", bin, "-o", "json", "-settle", "1s", "-window", "3s", "-timeout", "1m"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s\nstdout:\n%s", code, stderr.String(), stdout.String())
	}
	var r report
	dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("decoding the report: %v\n%s", err, stdout.String())
	}
	x := r.Idle
	if x == nil {
		t.Fatalf("no idle section:\n%s", stdout.String())
	}
	for _, chk := range []struct {
		what string
		ok   bool
	}{
		{"no error", r.Error == ""},
		{"n is 3", r.N == n},
		{"machine described", r.Machine.CPUs > 0 && r.Machine.MemoryBytes > 0 && r.Machine.Docker != "" && r.Machine.Dockfleet != "" && r.Machine.OpenFileLimit > 0},
		{"setup timed", r.Setup.EnrollSeconds > 0 && r.Setup.HealthySeconds > 0 && r.Setup.ConnectedRSSBytes > 0},
		{"memory measured", x.RSSBytes > 0 && x.RSSMaxBytes >= x.RSSBytes && x.HWMBytes >= x.RSSBytes &&
			x.RSSAnonBytes > 0 && x.RSSFileBytes > 0 && x.RSSAnonBytes+x.RSSFileBytes <= x.RSSBytes && x.Threads > 0 && x.OpenFiles > 0},
		// Over a 3 s window an idle agent may use less than a clock tick
		// (10 ms), so 0 is a real reading; but an idle agent using a fifth
		// of a core, or more than every core, is a broken agent or a
		// broken measurement (a tick count read as seconds is 100 times
		// too much). NaN fails every comparison.
		{"CPU measured over the window asked for", x.WindowSeconds >= 3 && x.WindowSeconds < 60},
		{"agent CPU measured", x.CPUPercent >= 0 && x.CPUPercent < 20},
		{"server CPU measured", x.ServerCPUPercent >= 0 && x.ServerCPUPercent < 20},
		{"dockerd CPU measured if found", x.DockerdCPUPercent >= 0 && x.DockerdCPUPercent <= 100*float64(r.Machine.CPUs) &&
			(x.DockerdFound || x.DockerdCPUPercent == 0)},
		{"every container healthy at the end", x.HealthyAtEnd == n},
		{"targets", r.Targets == designTargets},
	} {
		if !chk.ok {
			t.Errorf("%s: no", chk.what)
		}
	}
	// The run removed its containers and its work dir.
	left, err := testenv.SDK(t).ContainerList(t.Context(), client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", benchLabel+"="+r.RunID)})
	if err != nil {
		t.Fatal(err)
	}
	if r.RunID == "" || len(left.Items) > 0 {
		t.Errorf("run %q left %d containers", r.RunID, len(left.Items))
	}
	if t.Failed() {
		t.Logf("report:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
}
