package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dockfleet/dockfleet/bench/internal/benchenv"
)

// report is the benchmark's result; -o json prints it as it is. Times are
// in seconds, sizes in bytes. A section is null when the run failed before
// it was measured.
type report struct {
	Command string `json:"command"`
	N       int    `json:"n"`
	// Replicas is how many server processes shared the store.
	Replicas int `json:"replicas"`
	// Store is what they shared; null when the run failed before.
	Store *storeInfo `json:"store"`
	// HeartbeatInterval is the server's (its default: the benchmark
	// passes no flag that changes its behaviour).
	HeartbeatInterval string           `json:"heartbeatInterval"`
	SimProcesses      []simProcess     `json:"simProcesses"`
	Machine           benchenv.Machine `json:"machine"`

	Connect  *connectResult  `json:"connect"`
	Idle     *idleResult     `json:"idle"`
	Fanout   *fanoutResult   `json:"fanout"`
	API      *apiResult      `json:"api"`
	Rollout  *rolloutResult  `json:"rollout"`
	Rollback *rollbackResult `json:"rollback"`
	Restart  *restartResult  `json:"restart"`
	// Steps say how the server fared in each step.
	Steps []stepResult `json:"steps"`

	// Targets are DESIGN §9's, set for 10,000 agents.
	Targets targets `json:"targets"`
	// ProfilesDir holds the server's profiles (-profiles).
	ProfilesDir string `json:"profilesDir,omitempty"`
	// Gaps say what the benchmark cannot measure, or only roughly.
	Gaps []string `json:"gaps"`
	// Error says why the run stopped early; empty when it did not.
	Error string `json:"error,omitempty"`
}

// storeInfo is the servers' store.
type storeInfo struct {
	// Kind is sqlite (a file in the server's data dir) or postgres.
	Kind string `json:"kind"`
	// The rest is PostgreSQL's: its URL without a password; Own when the
	// benchmark started it on this machine (its CPU is measured), not
	// -store-url's; its version; and the settings that bear on the
	// figures, as it reported them.
	URL      string            `json:"url,omitempty"`
	Own      bool              `json:"own,omitempty"`
	Version  string            `json:"version,omitempty"`
	Settings map[string]string `json:"settings,omitempty"`
}

// simProcess is one `dockfleet sim` process.
type simProcess struct {
	NamePrefix        string   `json:"namePrefix"`
	Agents            int      `json:"agents"`
	SourceIPs         []string `json:"sourceIPs"`
	UnhealthyFraction float64  `json:"unhealthyFraction"`
	Unhealthy         int      `json:"unhealthy"`
}

type connectResult struct {
	// Seconds from starting the sim processes until every agent had
	// enrolled and connected.
	Seconds         float64 `json:"seconds"`
	AgentsPerSecond float64 `json:"agentsPerSecond"`
	// NodesReady is what the API said afterwards.
	NodesReady int `json:"nodesReady"`
}

// idleResult is the idle figures: the replicas' in all, and each one's
// in Replicas.
type idleResult struct {
	SettleSeconds float64 `json:"settleSeconds"`
	// The replicas' in all; per agent, their growth shared out over all N.
	serverIdle
	// CPUWindowSeconds is how long CPU was measured; SimCPUPercent the
	// sim processes' together over it.
	CPUWindowSeconds float64 `json:"cpuWindowSeconds"`
	SimCPUPercent    float64 `json:"simCpuPercent"`
	SimRSSBytes      int64   `json:"simRssBytes"`
	// PostgresCPUPercent is the CPU of the benchmark's own PostgreSQL,
	// its postmaster and backends, over the window; null without one.
	PostgresCPUPercent *float64 `json:"postgresCpuPercent"`
	// AgentsCounted sums the replicas' Agents: N, unless a connection was
	// being made or ended as they were counted.
	AgentsCounted int `json:"agentsCounted"`
	// Replicas are each server process's figures.
	Replicas []replicaIdle `json:"replicas"`
}

// replicaIdle is one replica at idle. Agents is its connected agents,
// counted by its established connections on its agent address; its
// figures per agent share its memory's growth over those.
type replicaIdle struct {
	Name   string `json:"name"`
	Agents int    `json:"agents"`
	serverIdle
}

// serverIdle is a server's figures at idle, or several's summed.
type serverIdle struct {
	// RSS before the agents connected, and after they were connected and
	// idle for settle and the CPU window.
	RSSBaselineBytes int64 `json:"rssBaselineBytes"`
	RSSBytes         int64 `json:"rssBytes"`
	RSSPerAgentBytes int64 `json:"rssPerAgentBytes"`
	// Heap is the server's live heap (runtime.MemStats.HeapAlloc right
	// after a garbage collection, read from its --debug-addr pprof
	// endpoint) before the agents connected and after the CPU window;
	// stacks are its goroutine stacks (StackInuse), GoSys all the memory
	// the Go runtime took from the OS (Sys).
	HeapBaselineBytes int64 `json:"heapBaselineBytes"`
	HeapLiveBytes     int64 `json:"heapLiveBytes"`
	HeapPerAgentBytes int64 `json:"heapPerAgentBytes"`
	StacksBytes       int64 `json:"stacksBytes"`
	GoSysBytes        int64 `json:"goSysBytes"`
	// GCsIdle counts the server's own collections over settle and the
	// CPU window.
	GCsIdle int `json:"gcsIdle"`
	// Goroutines is how many the server runs with every agent idle.
	Goroutines int `json:"goroutines"`
	// CPUPercent is the server's user+system CPU over the window, in % of
	// one core.
	CPUPercent float64 `json:"cpuPercent"`
	OpenFiles  int     `json:"openFiles"`
}

// add sums o's figures into s's, and shares the memory's growth over
// agents.
func (s *serverIdle) add(o serverIdle, agents int) {
	s.RSSBaselineBytes += o.RSSBaselineBytes
	s.RSSBytes += o.RSSBytes
	s.HeapBaselineBytes += o.HeapBaselineBytes
	s.HeapLiveBytes += o.HeapLiveBytes
	s.StacksBytes += o.StacksBytes
	s.GoSysBytes += o.GoSysBytes
	s.GCsIdle += o.GCsIdle
	s.Goroutines += o.Goroutines
	s.CPUPercent += o.CPUPercent
	s.OpenFiles += o.OpenFiles
	s.perAgent(agents)
}

// perAgent shares the memory's growth since the baseline over agents.
func (s *serverIdle) perAgent(agents int) {
	if k := int64(agents); k > 0 {
		s.RSSPerAgentBytes = max(s.RSSBytes-s.RSSBaselineBytes, 0) / k
		s.HeapPerAgentBytes = max(s.HeapLiveBytes-s.HeapBaselineBytes, 0) / k
	}
}

// latency is a distribution, in seconds.
type latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

type fanoutResult struct {
	// ApplySeconds is the apply request itself; the latencies count from
	// its answer to each agent's ack of the desired state carrying its
	// instance, both on this machine's clock.
	ApplySeconds float64 `json:"applySeconds"`
	Ack          latency `json:"ack"`
	// RolloutSeconds is from the apply until its rollout (one batch of
	// 100 %) succeeded.
	RolloutSeconds float64 `json:"rolloutSeconds"`
	// ServerCPUSeconds and SimCPUSeconds are the CPU time the server and
	// the sim processes used from the apply to the last ack: with both on
	// one machine's cores, they show whose work bounds the fan-out.
	ServerCPUSeconds float64 `json:"serverCpuSeconds"`
	SimCPUSeconds    float64 `json:"simCpuSeconds"`
	// PostgresCPUSeconds is the benchmark's own PostgreSQL's over the
	// same time; null without one.
	PostgresCPUSeconds *float64 `json:"postgresCpuSeconds"`
}

type apiResult struct {
	Concurrency int     `json:"concurrency"`
	Nodes       latency `json:"nodes"`
	// Describe is `dockfleet describe deployment`: GET the deployment
	// (with its N instances), then GET its rollout.
	Describe latency `json:"describe"`
	Errors   int     `json:"errors"`
}

type rolloutResult struct {
	// Seconds from the apply until the rollout succeeded.
	Seconds   float64 `json:"seconds"`
	Batches   int     `json:"batches"`
	Instances int     `json:"instances"`
}

type rollbackResult struct {
	UnhealthyAgents int `json:"unhealthyAgents"`
	// StoppedSeconds is from the apply until the rollout ended
	// rolled_back; RolledBackSeconds until every instance was back on
	// the previous revision and running.
	StoppedSeconds    float64 `json:"stoppedSeconds"`
	RolledBackSeconds float64 `json:"rolledBackSeconds"`
	Batches           int     `json:"batches"`
	FailedInstances   int     `json:"failedInstances"`
	State             string  `json:"state"`
	Message           string  `json:"message"`
}

// restartResult is the restart of every replica, one after another; with
// several, the slowest one's stop, start and outage, and every agent's
// reconnection.
type restartResult struct {
	// StopSeconds: SIGTERM until the server exited; StartSeconds: the new
	// process until its API answered.
	StopSeconds  float64 `json:"stopSeconds"`
	StartSeconds float64 `json:"startSeconds"`
	// Reconnect counts from the new server process's start to each
	// agent's new connection (0 for one that was back on another replica
	// before); its max is when all were back.
	Reconnect latency `json:"reconnect"`
	// OutageSeconds is from SIGTERM until the last agent was back.
	OutageSeconds float64 `json:"outageSeconds"`
	Disconnected  int     `json:"disconnected"`
	NodesReady    int     `json:"nodesReady"`
	// Replicas are each replica's restart, in order.
	Replicas []replicaRestart `json:"replicas"`
	// ContainersReplaced counts instances whose container ID changed or
	// that stopped running across the restart.
	InstancesChecked   int `json:"instancesChecked"`
	ContainersReplaced int `json:"containersReplaced"`
}

// replicaRestart is one replica's restart; Agents is how many it held
// before.
type replicaRestart struct {
	Name          string  `json:"name"`
	Agents        int     `json:"agents"`
	StopSeconds   float64 `json:"stopSeconds"`
	StartSeconds  float64 `json:"startSeconds"`
	Reconnect     latency `json:"reconnect"`
	OutageSeconds float64 `json:"outageSeconds"`
	Disconnected  int     `json:"disconnected"`
}

// stepResult is one step of the run, as the server lived it.
type stepResult struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	// MaxOpenFiles is the most files the server (the replica with the
	// most) held open at once, sampled every 250 ms: one per agent, and
	// the rest (the store, API connections) within the open-file limit.
	MaxOpenFiles int `json:"maxOpenFiles"`
	// UnreachableMarks counts the server's "node unreachable" warnings;
	// but in the restart (agents away until they reconnect) every agent
	// stays connected throughout, so each is a false alarm.
	UnreachableMarks int `json:"unreachableMarks"`
	// ServerErrors counts the ERROR lines of the server's log.
	ServerErrors int `json:"serverErrors"`
}

// targets are DESIGN §9's figures, for AtAgents agents.
type targets struct {
	AtAgents            int     `json:"atAgents"`
	RSSPerAgentBytes    int64   `json:"rssPerAgentBytes"`
	CPUPercent          float64 `json:"cpuPercent"`
	FanoutP99Seconds    float64 `json:"fanoutP99Seconds"`
	FanoutMaxSeconds    float64 `json:"fanoutMaxSeconds"`
	RolloutSeconds      float64 `json:"rolloutSeconds"`
	AgentsOneServerHold int     `json:"agentsOneServerHolds"`
}

var designTargets = targets{AtAgents: 10000, RSSPerAgentBytes: 32 << 10, CPUPercent: 10, FanoutP99Seconds: 1,
	FanoutMaxSeconds: 2, RolloutSeconds: 20, AgentsOneServerHold: 19000}

// distribution summarizes durations; nearest-rank percentiles.
func distribution(ds []time.Duration) latency {
	if len(ds) == 0 {
		return latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return latency{Count: len(s), P50: percentile(s, 0.50).Seconds(), P99: percentile(s, 0.99).Seconds(), Max: s[len(s)-1].Seconds()}
}

// percentile is the nearest-rank percentile p (0 < p ≤ 1) of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func (r *report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable prints one row per figure, with DESIGN §9's target where
// there is one; a verdict only at the fleet size the target is set for.
func (r *report) WriteTable(w io.Writer) {
	m := r.Machine
	procs := make([]string, len(r.SimProcesses))
	for i, p := range r.SimProcesses {
		procs[i] = fmt.Sprintf("%d from %s", p.Agents, strings.Join(p.SourceIPs, ","))
	}
	servers := "one server"
	if r.Replicas > 1 {
		servers = fmt.Sprintf("%d server replicas (--max-agents by the open-file limit)", r.Replicas)
	}
	fmt.Fprintf(w, "dockfleet scale: %d simulated agents in %d sim process(es) (%s); %s, %s, TLS, default flags "+
		"(and pprof on loopback), heartbeats every %s\n",
		r.N, len(r.SimProcesses), strings.Join(procs, "; "), servers, r.Store.describe(), r.HeartbeatInterval)
	fmt.Fprintf(w, "machine: %d CPUs, %.1f GiB, kernel %s, %s, %s, open files ≤ %d; load %s at the start, %s at the end\n",
		m.CPUs, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.Go, m.Dockfleet, m.OpenFileLimit, m.LoadAvg, m.LoadAvgEnd)
	fmt.Fprintf(w, "date: %s; command: %s\n\n", m.Date.Format(time.RFC3339), r.Command)

	t := r.Targets
	judge := r.N >= t.AtAgents
	verdict := func(ok bool, target string) string {
		if !judge {
			return target
		}
		if ok {
			return target + "  met"
		}
		return target + "  MISSED"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "figure\tmeasured\ttarget at %s agents (DESIGN §9)\n", thousands(t.AtAgents))
	row := func(figure, value, target string) { fmt.Fprintf(tw, "%s\t%s\t%s\n", figure, value, target) }
	if c := r.Connect; c != nil {
		row(fmt.Sprintf("enroll and connect all %d agents", r.N), fmt.Sprintf("%s (%.0f agents/s)", secs(c.Seconds), c.AgentsPerSecond), "")
	}
	if x := r.Restart; x != nil {
		row("reconnect all after a server restart", fmt.Sprintf("%s after the new server started (p50 %s, p99 %s); outage %s from SIGTERM",
			secs(x.Reconnect.Max), secs(x.Reconnect.P50), secs(x.Reconnect.P99), secs(x.OutageSeconds)), "")
		if r.Replicas > 1 {
			for _, y := range x.Replicas {
				row("  "+y.Name+", restarted in turn", fmt.Sprintf("its %d agents back %s after its new process started (p50 %s); outage %s from SIGTERM",
					y.Agents, secs(y.Reconnect.Max), secs(y.Reconnect.P50), secs(y.OutageSeconds)), "")
			}
		}
		replaced := "not checked: no deployment (-steps without fanout)"
		if x.InstancesChecked > 0 {
			replaced = fmt.Sprintf("%d of %d", x.ContainersReplaced, x.InstancesChecked)
		}
		row("  containers replaced by the restart", replaced, "0")
	}
	if x := r.Idle; x != nil {
		row("server RSS per connected idle agent", fmt.Sprintf("%s (%s → %s)", kib(x.RSSPerAgentBytes), mib(x.RSSBaselineBytes), mib(x.RSSBytes)),
			verdict(x.RSSPerAgentBytes <= t.RSSPerAgentBytes, "≤ "+kib(t.RSSPerAgentBytes)))
		row("server Go heap per agent (live, after a GC)", fmt.Sprintf("%s (heap %s; Go runtime in all %s; %d GCs idle)",
			kib(x.HeapPerAgentBytes), mib(x.HeapLiveBytes), mib(x.GoSysBytes), x.GCsIdle), "")
		row("server goroutines and their stacks", fmt.Sprintf("%d goroutines (%.1f per agent), stacks %s (%s per agent)",
			x.Goroutines, float64(x.Goroutines)/float64(r.N), mib(x.StacksBytes), kib(x.StacksBytes/int64(r.N))), "")
		row(fmt.Sprintf("server CPU, idle agents, heartbeats every %s", r.HeartbeatInterval),
			fmt.Sprintf("%.1f %% of one core over %s (sims: %.1f %%)", x.CPUPercent, secs(x.CPUWindowSeconds), x.SimCPUPercent),
			verdict(x.CPUPercent <= t.CPUPercent, fmt.Sprintf("≤ %.0f %%", t.CPUPercent)))
		if p := x.PostgresCPUPercent; p != nil {
			row("  PostgreSQL's CPU meanwhile", fmt.Sprintf("%.1f %% of one core", *p), "")
		}
		if r.Replicas > 1 {
			for _, y := range x.Replicas {
				row("  "+y.Name, fmt.Sprintf("%d agents: RSS %s per agent (%s → %s), heap %s per agent, CPU %.1f %%, %d open files",
					y.Agents, kib(y.RSSPerAgentBytes), mib(y.RSSBaselineBytes), mib(y.RSSBytes), kib(y.HeapPerAgentBytes), y.CPUPercent, y.OpenFiles), "")
			}
		}
	}
	if x := r.Fanout; x != nil {
		row("fan-out: apply → desired state acked", fmt.Sprintf("p50 %s, p99 %s, max %s (%d agents)", ms(x.Ack.P50), ms(x.Ack.P99), ms(x.Ack.Max), x.Ack.Count),
			verdict(x.Ack.P99 <= t.FanoutP99Seconds && x.Ack.Max <= t.FanoutMaxSeconds,
				fmt.Sprintf("p99 ≤ %s, max ≤ %s", secs(t.FanoutP99Seconds), secs(t.FanoutMaxSeconds))))
		row("  CPU used until the last ack", fmt.Sprintf("server %s, sims %s (%.0f µs and %.0f µs per agent)", secs(x.ServerCPUSeconds), secs(x.SimCPUSeconds),
			x.ServerCPUSeconds/float64(max(x.Ack.Count, 1))*1e6, x.SimCPUSeconds/float64(max(x.Ack.Count, 1))*1e6), "")
		if p := x.PostgresCPUSeconds; p != nil {
			row("  PostgreSQL's CPU until the last ack", secs(*p), "")
		}
	}
	if x := r.Rollout; x != nil {
		row("rollout in 10 % batches, instant health", fmt.Sprintf("%s (%d batches, %d instances)", secs(x.Seconds), x.Batches, x.Instances),
			verdict(x.Seconds <= t.RolloutSeconds, "≤ "+secs(t.RolloutSeconds)))
	}
	if x := r.Rollback; x != nil {
		row(fmt.Sprintf("rollout, %d unhealthy agents, autoRollback", x.UnhealthyAgents),
			fmt.Sprintf("stopped %s, all back %s (%s after %d batch(es))", secs(x.StoppedSeconds), secs(x.RolledBackSeconds), x.State, x.Batches), "")
	}
	if x := r.API; x != nil {
		row(fmt.Sprintf("GET /v1/nodes (%d nodes)", r.N), fmt.Sprintf("p50 %s, p99 %s (%d calls, %d at once)", ms(x.Nodes.P50), ms(x.Nodes.P99), x.Nodes.Count, x.Concurrency), "")
		row(fmt.Sprintf("describe deployment (%d instances)", r.N), fmt.Sprintf("p50 %s, p99 %s (%d calls, %d at once)", ms(x.Describe.P50), ms(x.Describe.P99), x.Describe.Count, x.Concurrency), "")
	}
	tw.Flush()
	if len(r.Steps) > 0 {
		fmt.Fprintln(w, "\nthe server in each step:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "step\ttime\topen files (max)\t\"node unreachable\" warnings\tERROR lines")
		for _, s := range r.Steps {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", s.Name, secs(s.Seconds), s.MaxOpenFiles, s.UnreachableMarks, s.ServerErrors)
		}
		tw.Flush()
	}
	if len(r.Gaps) > 0 {
		fmt.Fprintln(w, "\nnot measured, or only roughly:")
		for _, g := range r.Gaps {
			fmt.Fprintf(w, "  - %s\n", g)
		}
	}
	if r.ProfilesDir != "" {
		fmt.Fprintf(w, "\nthe server's profiles: %s (go tool pprof %s/cpu-fanout.pprof)\n", r.ProfilesDir, r.ProfilesDir)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "\nthe run stopped early: %s\n", r.Error)
	}
}

// describe names the store for the table's first line.
func (s *storeInfo) describe() string {
	switch {
	case s == nil:
		return "the store not started"
	case s.Kind != "postgres":
		return "SQLite"
	}
	where := "-store-url's"
	if s.Own {
		where = "its own, on this machine"
	}
	var set []string
	for _, k := range pgReported {
		if v, ok := s.Settings[k]; ok {
			set = append(set, k+"="+v)
		}
	}
	return fmt.Sprintf("PostgreSQL %s (%s; %s)", s.Version, where, strings.Join(set, ", "))
}

func secs(s float64) string {
	if s < 10 {
		return fmt.Sprintf("%.2f s", s)
	}
	return fmt.Sprintf("%.1f s", s)
}

func ms(s float64) string {
	switch {
	case s >= 1:
		return secs(s)
	case s < 0.01:
		return fmt.Sprintf("%.1f ms", s*1000)
	}
	return fmt.Sprintf("%.0f ms", s*1000)
}

func kib(b int64) string { return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10)) }
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// thousands writes 10000 as 10,000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
