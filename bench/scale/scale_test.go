package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dockfleet/dockfleet/bench/internal/benchenv"
	"github.com/dockfleet/dockfleet/internal/pgserver"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestSplit(t *testing.T) {
	tests := []struct {
		n, per int
		want   []int
	}{
		{1, 9000, []int{1}},
		{300, 9000, []int{300}},
		{9000, 9000, []int{9000}},
		{9001, 9000, []int{4501, 4500}},
		{19000, 9000, []int{6334, 6333, 6333}},
		{10, 3, []int{3, 3, 2, 2}},
	}
	for _, tt := range tests {
		got := split(tt.n, tt.per)
		if !slices.Equal(got, tt.want) {
			t.Errorf("split(%d, %d) = %v; want %v", tt.n, tt.per, got, tt.want)
		}
	}
}

func TestSourceIPs(t *testing.T) {
	got := sourceIPs([]int{6334, 4000, 1})
	want := [][]string{{"127.0.0.2", "127.0.0.3"}, {"127.0.0.4"}, {"127.0.0.5"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("sourceIPs = %v; want %v", got, want)
	}
}

func TestUnhealthy(t *testing.T) {
	tests := []struct {
		k    int
		f    float64
		want int
	}{
		{1000, 0.01, 10},
		{300, 0.01, 3},
		{20, 0.01, 1}, // at least one per process
		{1, 0.01, 1},
	}
	for _, tt := range tests {
		if got := unhealthyCount(tt.k, unhealthyShare(tt.k, tt.f)); got != tt.want {
			t.Errorf("%d agents at %g: %d unhealthy; want %d", tt.k, tt.f, got, tt.want)
		}
	}
}

func TestDistribution(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := distribution(ds)
	want := latency{Count: 100, P50: 0.050, P99: 0.099, Max: 0.100}
	if got != want {
		t.Errorf("distribution = %+v; want %+v", got, want)
	}
	if got := distribution(nil); got != (latency{}) {
		t.Errorf("distribution(nil) = %+v; want zero", got)
	}
	if got := distribution([]time.Duration{time.Second}); got.P50 != 1 || got.P99 != 1 || got.Max != 1 {
		t.Errorf("distribution of one = %+v; want 1 s everywhere", got)
	}
}

func TestParseMemStats(t *testing.T) {
	profile := `heap profile: 5: 2048 [20: 8192] @ heap/1048576
1: 1024 [1: 1024] @ 0x4a2f1b 0x4a2e3c
#	0x4a2f1a	main.main+0x3a	/src/main.go:12

# runtime.MemStats
# Alloc = 36805000
# TotalAlloc = 912345678
# Sys = 1135894528
# HeapAlloc = 369098752
# HeapSys = 800000000
# Stack = 84934656 / 85000000
# NumGC = 47
# DebugGC = false
`
	got, err := parseMemStats(strings.NewReader(profile))
	want := memStats{heapAlloc: 369098752, stackInuse: 84934656, sys: 1135894528, numGC: 47}
	if err != nil || got != want {
		t.Errorf("parseMemStats = %+v, %v; want %+v", got, err, want)
	}
	if _, err := parseMemStats(strings.NewReader("heap profile: 0: 0 [0: 0] @ heap/1048576\n")); err == nil {
		t.Error("a profile without MemStats parsed")
	}
}

func TestParseGoroutines(t *testing.T) {
	if n, err := parseGoroutines("goroutine profile: total 50013\n"); err != nil || n != 50013 {
		t.Errorf("parseGoroutines = %d, %v; want 50013", n, err)
	}
	if _, err := parseGoroutines("goroutine 1 [running]:\n"); err == nil {
		t.Error("a goroutine dump parsed as a profile")
	}
}

func TestTracker(t *testing.T) {
	base := time.Unix(1767225600, 0)
	ev := func(d time.Duration, agent, event string, extra string) []byte {
		return []byte(`{"t":` + jsonInt(base.Add(d).UnixNano()) + `,"agent":"` + agent + `","event":"` + event + `"` + extra + `}`)
	}
	tr := newTracker()
	for _, l := range [][]byte{
		ev(0, "a-1", "started", ""),
		ev(0, "a-2", "started", ""),
		ev(1*time.Second, "a-1", "connected", ""),
		ev(1*time.Second, "a-1", "desired", `,"generation":5,"instances":0`),
		ev(2*time.Second, "a-2", "connected", ""),
		ev(5*time.Second, "a-1", "desired", `,"generation":6,"instances":1`),
		ev(6*time.Second, "a-2", "desired", `,"generation":7,"instances":1`),
		ev(10*time.Second, "a-1", "disconnected", `,"error":"rpc error: EOF"`),
		ev(10*time.Second, "a-2", "disconnected", `,"error":"rpc error: EOF"`),
		ev(12*time.Second, "a-2", "connected", ""),
		[]byte("sim: not an event"),
	} {
		tr.line(l)
	}
	if err := tr.failure(); err != nil {
		t.Errorf("failure = %v; want none", err)
	}
	times, connected := tr.connectedSince(base.Add(9 * time.Second))
	if connected != 1 || len(times) != 1 || !times[0].Equal(base.Add(12*time.Second)) {
		t.Errorf("connectedSince(9s) = %v, %d connected; want a-2 at 12s, 1 connected", times, connected)
	}
	acks := tr.firstDesired(base.Add(3 * time.Second))
	slices.SortFunc(acks, func(a, b time.Time) int { return a.Compare(b) })
	if want := []time.Time{base.Add(5 * time.Second), base.Add(6 * time.Second)}; !slices.EqualFunc(acks, want, time.Time.Equal) {
		t.Errorf("firstDesired = %v; want %v (states with an instance only)", acks, want)
	}
	if got := latest(acks); !got.Equal(base.Add(6 * time.Second)) {
		t.Errorf("latest = %v", got)
	}
	if n := tr.disconnectsSince(base.Add(9 * time.Second)); n != 2 {
		t.Errorf("disconnectsSince = %d; want 2", n)
	}
	tr.line(ev(13*time.Second, "a-3", "failed", `,"error":"enrollment refused"`))
	if err := tr.failure(); err == nil || !strings.Contains(err.Error(), "a-3: enrollment refused") {
		t.Errorf("failure = %v; want a-3's", err)
	}
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-n", "300", "-o", "json"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.n != 300 || cfg.perProcess != defaultPerProcess || cfg.output != "json" || cfg.command != "go run ./bench/scale -n 300 -o json" {
		t.Errorf("parseFlags = %+v", cfg)
	}
	for _, args := range [][]string{
		{"-n", "0"},
		{"-n", "25000"}, // more than one server process may hold here
		{"-per-process", "0"},
		{"-per-process", "19900"},
		{"-n", "5000", "-per-process", "10"}, // 500 processes
		{"-o", "yaml"},
		{"-unhealthy", "0"},
		{"-cpu-window", "0s"},
		{"extra"},
		{"-store", "mysql"},
		{"-replicas", "0"},
		{"-replicas", "2"}, // on SQLite
		{"-replicas", "2", "-store", "sqlite", "-store-url", "postgres://u@127.0.0.1:5432/db"},
		{"-store-url", "mysql://u@127.0.0.1/db"},
		{"-store-url", "127.0.0.1:5432"},
		{"-steps", "connect,warp"},
		{"-steps", "idle"},            // needs connect
		{"-steps", "connect,rollout"}, // needs fanout
		{"-steps", ""},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error; want one", args)
		}
	}
}

func TestParseFlagsStore(t *testing.T) {
	cfg, err := parseFlags([]string{"-store-url", "postgres://bench:secret@10.0.0.5:5432/fleet", "-replicas", "3", "-steps", "connect, idle"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.store != "postgres" || cfg.replicas != 3 || len(cfg.steps) != 2 || !cfg.steps["connect"] || !cfg.steps["idle"] {
		t.Errorf("parseFlags = store %q, %d replicas, steps %v; want postgres (implied by -store-url), 3, connect and idle", cfg.store, cfg.replicas, cfg.steps)
	}
	cfg, err = parseFlags(nil, io.Discard)
	if err != nil || cfg.store != "sqlite" || cfg.replicas != 1 || len(cfg.steps) != len(stepNames) {
		t.Errorf("defaults: store %q, %d replicas, steps %v, %v; want sqlite, 1, all", cfg.store, cfg.replicas, cfg.steps, err)
	}
	// A URL that does not parse is not echoed: it may hold a password.
	_, err = parseFlags([]string{"-store-url", "mysql://u:hunter2@h/db"}, io.Discard)
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("a bad -store-url: %v; want an error without its password", err)
	}
}

// TestParseFlagsReplicasNeeded: the open-file limit holds per replica,
// and too few replicas for n agents are refused with how many it takes.
func TestParseFlagsReplicasNeeded(t *testing.T) {
	limit := benchenv.OpenFileLimit()
	if limit <= serverFileMargin {
		if os.Getenv("CI") == "true" {
			t.Fatalf("open-file limit %d: CI machines allow 20,000", limit)
		}
		t.Skipf("open-file limit %d", limit)
	}
	per := int(limit - serverFileMargin)
	n := 2*per + 1 // three replicas' worth
	_, err := parseFlags([]string{"-n", strconv.Itoa(n), "-replicas", "2", "-store", "postgres"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "need -replicas 3 at least") {
		t.Errorf("%d agents on 2 replicas of %d files: %v; want them refused, saying 3 replicas", n, limit, err)
	}
	_, err = parseFlags([]string{"-n", strconv.Itoa(n)}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-replicas 3 -store postgres") {
		t.Errorf("%d agents on one SQLite server: %v; want them refused, saying 3 replicas on PostgreSQL", n, err)
	}
	if _, err := parseFlags([]string{"-n", strconv.Itoa(n), "-replicas", "3", "-store", "postgres"}, io.Discard); err != nil {
		t.Errorf("%d agents on 3 replicas: %v", n, err)
	}
}

func TestReplicasNeeded(t *testing.T) {
	for _, tt := range []struct {
		n     int
		limit uint64
		want  int
	}{
		{1, 20000, 1},
		{19000, 20000, 1},
		{19001, 20000, 2},
		{40000, 20000, 3}, // issue 13's fleet on this machine
		{57001, 20000, 4},
	} {
		if got := replicasNeeded(tt.n, tt.limit); got != tt.want {
			t.Errorf("replicasNeeded(%d, %d) = %d; want %d", tt.n, tt.limit, got, tt.want)
		}
	}
}

func TestSpec(t *testing.T) {
	s := string(spec(3, "10%", true))
	for _, want := range []string{"mode: global", "bench: scale", "@sha256:", `SCALE_STEP: "3"`, "exec:", "batchSize: 10%", "autoRollback: true"} {
		if !strings.Contains(s, want) {
			t.Errorf("spec lacks %q:\n%s", want, s)
		}
	}
	if s := string(spec(1, "100%", false)); strings.Contains(s, "healthCheck") {
		t.Errorf("spec without a check has one:\n%s", s)
	}
}

func TestTable(t *testing.T) {
	r := &report{N: 10000, Replicas: 1, Store: &storeInfo{Kind: "sqlite"}, HeartbeatInterval: "5s", Targets: designTargets, Command: "go run ./bench/scale -n 10000",
		SimProcesses: []simProcess{{Agents: 5000, SourceIPs: []string{"127.0.0.2", "127.0.0.3"}}, {Agents: 5000, SourceIPs: []string{"127.0.0.4", "127.0.0.5"}}},
		Connect:      &connectResult{Seconds: 40, AgentsPerSecond: 250},
		Idle:         &idleResult{serverIdle: serverIdle{RSSBaselineBytes: 20 << 20, RSSBytes: 320 << 20, RSSPerAgentBytes: 30 << 10, CPUPercent: 12.5}, CPUWindowSeconds: 30},
		Fanout:       &fanoutResult{Ack: latency{Count: 10000, P50: 0.4, P99: 0.9, Max: 2.5}},
		Rollout:      &rolloutResult{Seconds: 12, Batches: 10, Instances: 10000},
		Rollback:     &rollbackResult{UnhealthyAgents: 100, StoppedSeconds: 1, RolledBackSeconds: 2, State: "rolled_back", Batches: 1},
		API:          &apiResult{Concurrency: 4, Nodes: latency{Count: 200, P50: 0.2, P99: 0.5}, Describe: latency{Count: 200, P50: 0.005, P99: 0.02}},
		Restart:      &restartResult{Reconnect: latency{Count: 10000, P50: 2, P99: 5, Max: 6}, OutageSeconds: 7, InstancesChecked: 10000},
		Gaps:         []string{"something"},
		Steps:        []stepResult{{Name: "server restart", Seconds: 40, MaxOpenFiles: 19876, UnreachableMarks: 4816, ServerErrors: 4443}},
	}
	var b bytes.Buffer
	r.WriteTable(&b)
	out := b.String()
	for _, want := range []string{
		"10000 simulated agents in 2 sim process(es)",
		"; one server, SQLite, TLS",
		"≤ 32.0 KiB  met",       // 30 KiB
		"≤ 10 %  MISSED",        // 12.5 %
		"max ≤ 2.00 s  MISSED",  // max 2.5 s
		"≤ 20.0 s  met",         // 12 s
		"0 of 10000",            // containers replaced
		"p50 5.0 ms, p99 20 ms", // describe
		"target at 10,000 agents",
		"  - something",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`server restart +40.0 s +19876 +4816 +4443`).MatchString(out) {
		t.Errorf("table lacks the restart step's row:\n%s", out)
	}
	// Several replicas on PostgreSQL: the store, its settings, each
	// replica's figures and PostgreSQL's CPU.
	pgCPU := 4.5
	r.Replicas = 2
	r.Store = &storeInfo{Kind: "postgres", Own: true, Version: "15.4", Settings: map[string]string{"fsync": "on", "shared_buffers": "256MB"}}
	r.Idle.PostgresCPUPercent = &pgCPU
	r.Idle.Replicas = []replicaIdle{{Name: "server1", Agents: 5001, serverIdle: serverIdle{RSSPerAgentBytes: 29 << 10, CPUPercent: 6}},
		{Name: "server2", Agents: 4999, serverIdle: serverIdle{CPUPercent: 6.5}}}
	r.Restart.Replicas = []replicaRestart{{Name: "server1", Agents: 5001, Reconnect: latency{Max: 3}}, {Name: "server2", Agents: 4999}}
	b.Reset()
	r.WriteTable(&b)
	out = b.String()
	for _, want := range []string{
		`; 2 server replicas`,
		`, PostgreSQL 15\.4 \(its own, on this machine; shared_buffers=256MB, fsync=on\), TLS`,
		`PostgreSQL's CPU meanwhile +4\.5 % of one core`,
		`server1 +5001 agents: RSS 29\.0 KiB per agent`,
		`server2 +4999 agents: .* CPU 6\.5 %`,
		`server1, restarted in turn +its 5001 agents back 3\.00 s`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("table of replicas lacks %s:\n%s", want, out)
		}
	}

	// Below the fleet size the targets are set for, no verdicts.
	r.N = 1000
	b.Reset()
	r.WriteTable(&b)
	if out := b.String(); strings.Contains(out, "  met") || strings.Contains(out, "MISSED") {
		t.Errorf("table at 1000 agents judges against targets for 10,000:\n%s", out)
	}
}

// buildDockfleet builds the dockfleet binary from this tree.
func buildDockfleet(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dockfleet")
	build := exec.Command("go", "build", "-o", bin, "../../cmd/dockfleet")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building dockfleet: %v\n%s", err, out)
	}
	return bin
}

// skipShort skips a real run under -short, but in CI.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("a real run of simulated agents; not with -short")
	}
}

// requirePostgres skips a test without PostgreSQL's binaries, or fails it
// when CI=true.
func requirePostgres(t *testing.T) {
	t.Helper()
	if _, err := pgserver.BinDir(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required when CI=true: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
}

// runJSON runs the benchmark with args and -o json; it must succeed. It
// returns the report as a generic map and as a report, decoded strictly.
func runJSON(t *testing.T, args ...string) (map[string]any, report) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append(args, "-o", "json"), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s\nstdout:\n%s", code, stderr.String(), stdout.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("report:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
	})
	var raw map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &raw); err != nil {
		t.Fatalf("the output is not JSON: %v\n%s", err, stdout.String())
	}
	if _, ok := raw["error"]; ok {
		t.Errorf("the report has an error: %v", raw["error"])
	}
	var r report
	dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("decoding the report: %v", err)
	}
	return raw, r
}

// requireFields fails for each key of want (by path: "" the top, "a.b"
// an object in one) missing or null in raw.
func requireFields(t *testing.T, raw map[string]any, want map[string][]string) {
	t.Helper()
	for path, keys := range want {
		obj := raw
		if path != "" {
			for _, p := range strings.Split(path, ".") {
				next, ok := obj[p].(map[string]any)
				if !ok {
					t.Fatalf("%s is %v; want an object", path, obj[p])
				}
				obj = next
			}
		}
		for _, k := range keys {
			if v, ok := obj[k]; !ok || v == nil {
				t.Errorf("%s.%s is missing or null", path, k)
			}
		}
	}
}

type check struct {
	what string
	ok   bool
}

func requireChecks(t *testing.T, checks []check) {
	t.Helper()
	for _, chk := range checks {
		if !chk.ok {
			t.Errorf("%s: no", chk.what)
		}
	}
}

// TestSmoke runs the whole benchmark at N = 300 against the real binary,
// built from this tree, on SQLite: it must complete, and its JSON must
// have every field with a sane value. It asserts no timings
// (CONTRIBUTING.md). It takes about half a minute; -short skips it,
// except in CI.
func TestSmoke(t *testing.T) {
	skipShort(t)
	bin := buildDockfleet(t)
	raw, r := runJSON(t, "-n", "300", "-bin", bin, "-settle", "2s", "-cpu-window", "5s", "-api-requests", "50", "-timeout", "2m")
	checkFullRun(t, raw, r, 300, 50)
	requireChecks(t, []check{
		{"one server on SQLite", r.Replicas == 1 && r.Store != nil && r.Store.Kind == "sqlite" && r.Store.URL == ""},
		{"no PostgreSQL CPU without PostgreSQL", r.Idle != nil && r.Idle.PostgresCPUPercent == nil && r.Fanout != nil && r.Fanout.PostgresCPUSeconds == nil},
	})
}

// TestSmokePostgres runs the whole benchmark at N = 50 on one server and
// the benchmark's own PostgreSQL.
func TestSmokePostgres(t *testing.T) {
	skipShort(t)
	requirePostgres(t)
	bin := buildDockfleet(t)
	raw, r := runJSON(t, "-n", "50", "-store", "postgres", "-bin", bin, "-settle", "1s", "-cpu-window", "3s", "-api-requests", "20", "-timeout", "2m")
	checkFullRun(t, raw, r, 50, 20)
	checkPostgres(t, r)
	requireChecks(t, []check{
		{"one server", r.Replicas == 1},
		// 50 agents' fan-out may cost PostgreSQL less than one 10 ms tick.
		{"PostgreSQL's CPU measured in the fan-out", r.Fanout != nil && r.Fanout.PostgresCPUSeconds != nil && *r.Fanout.PostgresCPUSeconds >= 0},
	})
}

// TestSmokeReplicas runs enroll, connect, idle and a rolling restart with
// 50 agents over two replicas on the benchmark's own PostgreSQL: the
// steps that need no leader among the replicas (the restart without a
// deployment, so without the check of its containers).
func TestSmokeReplicas(t *testing.T) {
	skipShort(t)
	requirePostgres(t)
	bin := buildDockfleet(t)
	const n = 50
	raw, r := runJSON(t, "-n", "50", "-replicas", "2", "-store", "postgres", "-steps", "connect,idle,restart", "-bin", bin,
		"-settle", "1s", "-cpu-window", "3s", "-timeout", "1m")
	requireFields(t, raw, map[string][]string{
		"":      {"replicas", "store", "connect", "idle", "steps"},
		"store": {"kind", "url", "own", "version", "settings"},
		"idle":  {"rssPerAgentBytes", "cpuPercent", "postgresCpuPercent", "agentsCounted", "replicas"},
	})
	checkPostgres(t, r)
	c, x, rs := r.Connect, r.Idle, r.Restart
	if c == nil || x == nil || rs == nil {
		t.Fatal("connect, idle or restart is null")
	}
	checks := []check{
		{"2 replicas", r.Replicas == 2 && len(x.Replicas) == 2},
		{"every agent connected and ready", c.NodesReady == n},
		{"each replica's agents counted, n in all", x.AgentsCounted == n},
		{"only the steps asked for", len(r.Steps) == 4 && r.Fanout == nil && r.API == nil && r.Rollout == nil && r.Rollback == nil},
		{"PostgreSQL's CPU measured", x.PostgresCPUPercent != nil && *x.PostgresCPUPercent >= 0},
		// Each replica restarted in turn; the first's agents are those it
		// held at idle, and every one of them is back.
		{"both replicas restarted, one after the other", len(rs.Replicas) == 2 && rs.Replicas[0].Name == "server1" && rs.Replicas[1].Name == "server2"},
		{"the first replica's agents reconnected", len(rs.Replicas) == 2 && rs.Replicas[0].Agents == x.Replicas[0].Agents &&
			rs.Replicas[0].Reconnect.Count >= rs.Replicas[0].Agents && rs.Replicas[1].Reconnect.Count >= rs.Replicas[1].Agents},
		{"every node ready after the restarts", rs.NodesReady == n},
		{"no containers to check without a deployment", rs.InstancesChecked == 0 && rs.ContainersReplaced == 0},
	}
	var rss, cpu float64
	for _, y := range x.Replicas {
		// 50 agents that start at a random replica each: both get some.
		checks = append(checks, check{y.Name + " holds agents, and its memory and files are measured",
			y.Agents > 0 && y.RSSBytes > y.RSSBaselineBytes && y.RSSPerAgentBytes > 0 && y.HeapPerAgentBytes > 0 && y.OpenFiles >= y.Agents && y.Goroutines > y.Agents})
		rss += float64(y.RSSBytes)
		cpu += y.CPUPercent
	}
	checks = append(checks, check{"the totals are the replicas' sums", float64(x.RSSBytes) == rss && x.CPUPercent == cpu})
	requireChecks(t, checks)
}

// checkPostgres checks the report's store: the benchmark's own
// PostgreSQL, with the settings it starts it with.
func checkPostgres(t *testing.T, r report) {
	t.Helper()
	st := r.Store
	if st == nil {
		t.Fatal("store is null")
	}
	requireChecks(t, []check{
		{"the store is the run's own PostgreSQL", st.Kind == "postgres" && st.Own && strings.HasPrefix(st.URL, "postgres://") && st.Version != ""},
		{"its settings are the benchmark's", st.Settings["fsync"] == "on" && st.Settings["synchronous_commit"] == "on" &&
			st.Settings["shared_buffers"] == "256MB" && st.Settings["max_connections"] == "300"},
		{"a gap says it shares the machine", slices.ContainsFunc(r.Gaps, func(g string) bool { return strings.Contains(g, "PostgreSQL") })},
	})
}

// checkFullRun checks the report of a run of every step with n agents and
// requests API calls per endpoint.
func checkFullRun(t *testing.T, raw map[string]any, r report, n, requests int) {
	t.Helper()
	requireFields(t, raw, map[string][]string{
		"":                  {"command", "n", "replicas", "store", "heartbeatInterval", "simProcesses", "machine", "connect", "idle", "fanout", "api", "rollout", "rollback", "restart", "steps", "targets", "gaps"},
		"machine":           {"date", "cpus", "memoryBytes", "kernel", "go", "dockfleet", "openFileLimit", "loadAvg", "loadAvgEnd"},
		"connect":           {"seconds", "agentsPerSecond", "nodesReady"},
		"idle":              {"settleSeconds", "rssBaselineBytes", "rssBytes", "rssPerAgentBytes", "heapBaselineBytes", "heapLiveBytes", "heapPerAgentBytes", "stacksBytes", "goSysBytes", "gcsIdle", "goroutines", "cpuWindowSeconds", "cpuPercent", "simCpuPercent", "simRssBytes", "openFiles", "agentsCounted", "replicas"},
		"fanout":            {"applySeconds", "ack", "rolloutSeconds"},
		"fanout.ack":        {"count", "p50", "p99", "max"},
		"api":               {"concurrency", "nodes", "describe", "errors"},
		"rollout":           {"seconds", "batches", "instances"},
		"rollback":          {"unhealthyAgents", "stoppedSeconds", "rolledBackSeconds", "batches", "failedInstances", "state", "message"},
		"restart":           {"stopSeconds", "startSeconds", "reconnect", "outageSeconds", "disconnected", "nodesReady", "instancesChecked", "containersReplaced", "replicas"},
		"restart.reconnect": {"count", "p50", "p99", "max"},
	})
	unhealthy := 0
	agents := 0
	for _, p := range r.SimProcesses {
		agents += p.Agents
		unhealthy += p.Unhealthy
	}
	wantUnhealthy := unhealthyCount(n, unhealthyShare(n, 0.01))
	c, x, f, a, ro, rb, rs := r.Connect, r.Idle, r.Fanout, r.API, r.Rollout, r.Rollback, r.Restart
	if c == nil || x == nil || f == nil || a == nil || ro == nil || rb == nil || rs == nil {
		t.Fatal("a section of the report is null")
	}
	requireChecks(t, []check{
		{"n is as asked", r.N == n},
		{"one sim process of n agents", len(r.SimProcesses) == 1 && agents == n},
		{"1 % of the agents unhealthy, at least one", unhealthy == wantUnhealthy && unhealthy >= 1},
		{"machine described", r.Machine.CPUs > 0 && r.Machine.MemoryBytes > 0 && r.Machine.Dockfleet != "" && !r.Machine.Date.IsZero() && r.Machine.OpenFileLimit > 0},
		{"connect timed", c.Seconds > 0 && c.AgentsPerSecond > 0 && c.NodesReady == n},
		{"memory measured", x.RSSBaselineBytes > 0 && x.RSSBytes > 0 && x.HeapLiveBytes > x.HeapBaselineBytes && x.HeapPerAgentBytes > 0 &&
			x.StacksBytes > 0 && x.GoSysBytes > 0 && x.SimRSSBytes > 0 && x.Goroutines > n && x.RSSBytes < r.Machine.MemoryBytes},
		// n connections, their TLS state and goroutines cost the server
		// memory: the RSS grows, and the per-agent figure is that growth
		// shared out, not the whole RSS.
		{"RSS per agent is the RSS growth over n", x.RSSPerAgentBytes > 0 && x.RSSPerAgentBytes*int64(n) <= x.RSSBytes-x.RSSBaselineBytes},
		{"the server's agents counted by its connections", x.AgentsCounted == n && len(x.Replicas) == 1 && x.Replicas[0].Agents == n},
		// Idle, a collection may not happen at all, but the count of the
		// server's own (less the one the measurement forces) is not
		// negative, and ten a second would be a measurement or a server
		// gone wrong.
		{"GCs counted", x.GCsIdle >= 0 && float64(x.GCsIdle) <= 10*(x.SettleSeconds+x.CPUWindowSeconds)},
		// Agents heartbeat every 5 s: over the window the server and the
		// sims must use some CPU, and none can use more than every core
		// the whole window. NaN fails both comparisons.
		{"CPU measured over the window asked for", x.CPUWindowSeconds >= 3 && x.CPUWindowSeconds < 60},
		// A few dozen agents' heartbeats may cost less than one 10 ms tick.
		{"server CPU measured", (x.CPUPercent > 0 || n < 300) && x.CPUPercent >= 0 && x.CPUPercent <= 100*float64(r.Machine.CPUs)},
		{"sims' CPU measured", (x.SimCPUPercent > 0 || n < 300) && x.SimCPUPercent >= 0 && x.SimCPUPercent <= 100*float64(r.Machine.CPUs)},
		{"the server holds a file per agent", x.OpenFiles >= n},
		{"every agent acked the fan-out", f.Ack.Count == n && f.Ack.P50 <= f.Ack.P99 && f.Ack.P99 <= f.Ack.Max && f.ApplySeconds > 0 && f.RolloutSeconds > 0},
		{"API timed without errors", a.Nodes.Count == requests && a.Describe.Count == requests && a.Errors == 0 && a.Nodes.P50 > 0 && a.Describe.P50 > 0},
		{"rollout in 10 batches", ro.Batches == 10 && ro.Instances == n && ro.Seconds > 0},
		{"rollout with unhealthy agents rolled back", rb.State == "rolled_back" && rb.UnhealthyAgents == wantUnhealthy && rb.FailedInstances >= 1 &&
			rb.StoppedSeconds > 0 && rb.RolledBackSeconds >= rb.StoppedSeconds && rb.Message != ""},
		{"every agent reconnected after the restart", rs.Reconnect.Count == n && rs.Disconnected == n && rs.NodesReady == n && rs.OutageSeconds > 0 && rs.StartSeconds > 0 &&
			len(rs.Replicas) == 1 && rs.Replicas[0].Agents == n},
		{"no container replaced by the restart", rs.InstancesChecked == n && rs.ContainersReplaced == 0},
		{"targets and gaps", r.Targets == designTargets && len(r.Gaps) > 0},
		{"8 steps, each with the server's open files", len(r.Steps) == 8 && !slices.ContainsFunc(r.Steps, func(s stepResult) bool {
			return s.Name == "" || s.Seconds <= 0 || s.MaxOpenFiles < 1
		})},
	})
}

func TestRedactArgs(t *testing.T) {
	for _, tt := range []struct{ in, want []string }{
		{[]string{"-n", "5", "-store-url", "postgres://u:hunter2@h:5432/db"}, []string{"-n", "5", "-store-url", "postgres://u:xxxxx@h:5432/db"}},
		{[]string{"--store-url=postgres://u:hunter2@h/db", "-replicas", "2"}, []string{"--store-url=postgres://u:xxxxx@h/db", "-replicas", "2"}},
		{[]string{"-store-url", "postgres://u@h/db"}, []string{"-store-url", "postgres://u@h/db"}},
		{[]string{"-store-url"}, []string{"-store-url"}},
		{[]string{"-store", "postgres", "hunter2"}, []string{"-store", "postgres", "hunter2"}},
	} {
		if got := redactArgs(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("redactArgs(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
	cfg, err := parseFlags([]string{"-store-url", "postgres://u:hunter2@h:5432/db"}, io.Discard)
	if err != nil || strings.Contains(cfg.command, "hunter2") {
		t.Errorf("command %q, %v; want it without the password", cfg.command, err)
	}
}
