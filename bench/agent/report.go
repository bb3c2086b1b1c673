package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/dockfleet/dockfleet/bench/internal/benchenv"
)

// report is the benchmark's result; -o json prints it as it is. Times are
// in seconds, sizes in bytes, CPU in percent of one core. A section is
// null when the run failed before it was measured.
type report struct {
	Command string `json:"command"`
	// RunID is the value of the dockfleet-bench label on the agent's node
	// and on every container of the run.
	RunID string `json:"runId"`
	// N containers of Image, each with an HTTP check every CheckInterval.
	N             int    `json:"n"`
	Image         string `json:"image"`
	CheckInterval string `json:"checkInterval"`
	// GCTrace says the agent ran with GODEBUG=gctrace=1.
	GCTrace bool    `json:"gctrace"`
	Machine machine `json:"machine"`

	Setup setupResult `json:"setup"`
	Idle  *idleResult `json:"idle"`
	// Targets are DESIGN §9's, set for Targets.Containers containers.
	Targets targets `json:"targets"`
	// Error says why the run stopped early; empty when it did not.
	Error string `json:"error,omitempty"`
}

// machine is what the numbers were measured on.
// machine is the host, and the Docker engine the agent drives.
type machine struct {
	benchenv.Machine
	Docker string `json:"docker"`
}

type setupResult struct {
	// EnrollSeconds is from starting the agent until its node was ready.
	EnrollSeconds float64 `json:"enrollSeconds"`
	// ConnectedRSSBytes is the agent's RSS then, with no container yet.
	ConnectedRSSBytes int64 `json:"connectedRssBytes"`
	// HealthySeconds is from the apply until every instance was healthy.
	HealthySeconds float64 `json:"healthySeconds"`
	Revision       int64   `json:"revision"`
}

type idleResult struct {
	SettleSeconds float64 `json:"settleSeconds"`
	WindowSeconds float64 `json:"windowSeconds"`
	// CPUPercent is the agent's utime+stime over the window.
	CPUPercent float64 `json:"cpuPercent"`
	// ServerCPUPercent and DockerdCPUPercent are over the same window;
	// dockerd's includes all other work on the daemon (0 when
	// DockerdFound is false: no dockerd in this PID namespace).
	ServerCPUPercent  float64 `json:"serverCpuPercent"`
	DockerdCPUPercent float64 `json:"dockerdCpuPercent"`
	DockerdFound      bool    `json:"dockerdFound"`
	// RSSBytes is VmRSS at the end of the window, RSSMaxBytes the most
	// sampled once a second over it, HWMBytes VmHWM: the peak since the
	// agent started, creating the containers included. RSSAnonBytes
	// (heap, stacks, runtime) and RSSFileBytes (the binary's pages)
	// split RSSBytes.
	RSSBytes     int64 `json:"rssBytes"`
	RSSMaxBytes  int64 `json:"rssMaxBytes"`
	HWMBytes     int64 `json:"hwmBytes"`
	RSSAnonBytes int64 `json:"rssAnonBytes"`
	RSSFileBytes int64 `json:"rssFileBytes"`
	Threads      int   `json:"threads"`
	OpenFiles    int   `json:"openFiles"`
	// GC is the agent's Go heap, from its gctrace lines; null without
	// -gctrace or before its first collection.
	GC *gcResult `json:"gc"`
	// StateChanges counts the instance states the agent logged in the
	// window: 0 when every check kept passing.
	StateChanges int `json:"stateChanges"`
	HealthyAtEnd int `json:"healthyAtEnd"`
}

// gcResult is the agent's garbage collector, from GODEBUG=gctrace=1; the
// sizes are of its last collection, in whole MiB as the runtime prints
// them.
type gcResult struct {
	Total             int   `json:"total"`
	InWindow          int   `json:"inWindow"`
	LastHeapLiveBytes int64 `json:"lastHeapLiveBytes"`
	LastHeapGoalBytes int64 `json:"lastHeapGoalBytes"`
	LastStacksBytes   int64 `json:"lastStacksBytes"`
	LastGlobalsBytes  int64 `json:"lastGlobalsBytes"`
}

// targets are DESIGN §9's.
type targets struct {
	Containers int     `json:"containers"`
	RSSBytes   int64   `json:"rssBytes"`
	CPUPercent float64 `json:"cpuPercent"`
}

var designTargets = targets{Containers: 20, RSSBytes: 20 << 20, CPUPercent: 1}

func (r *report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable prints one row per figure, with DESIGN §9's target where
// there is one; a verdict only from the number of containers the target is
// set for.
func (r *report) WriteTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "dockfleet agent footprint: one real agent (default flags) managing %d containers of %s, "+
		"HTTP check GET :8080/healthz every %s, idle\n", r.N, r.Image, r.CheckInterval)
	fmt.Fprintf(w, "machine: %d CPUs, %.1f GiB, kernel %s, Docker %s, %s, %s, open files ≤ %d; load %s at the start, %s at the end\n",
		m.CPUs, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.Docker, m.Go, m.Dockfleet, m.OpenFileLimit, m.LoadAvg, m.LoadAvgEnd)
	fmt.Fprintf(w, "date: %s; command: %s\n\n", m.Date.Format(time.RFC3339), r.Command)

	t := r.Targets
	verdict := func(ok bool, target string) string {
		switch {
		case r.N < t.Containers:
			return target
		case ok:
			return target + "  met"
		}
		return target + "  MISSED"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "figure\tmeasured\ttarget at %d containers (DESIGN §9)\n", t.Containers)
	row := func(figure, value, target string) { fmt.Fprintf(tw, "%s\t%s\t%s\n", figure, value, target) }
	s := r.Setup
	if s.EnrollSeconds > 0 {
		row("agent enrolled and connected", fmt.Sprintf("%.2f s; RSS then %s, no containers", s.EnrollSeconds, mib(s.ConnectedRSSBytes)), "")
	}
	if s.HealthySeconds > 0 {
		row(fmt.Sprintf("apply → %d containers healthy", r.N), fmt.Sprintf("%.2f s", s.HealthySeconds), "")
	}
	if x := r.Idle; x != nil {
		row("agent resident memory (VmRSS), idle", fmt.Sprintf("%s (anonymous %s, file %s); most in the window %s",
			mib(x.RSSBytes), mib(x.RSSAnonBytes), mib(x.RSSFileBytes), mib(x.RSSMaxBytes)),
			verdict(x.RSSBytes <= t.RSSBytes, "≤ "+mib(t.RSSBytes)))
		row("  peak since start (VmHWM)", mib(x.HWMBytes), "")
		if g := x.GC; g != nil {
			row("  Go heap (gctrace, last GC)", fmt.Sprintf("live %s, goal %s, stacks %s, globals %s; %d GCs in the window",
				mib(g.LastHeapLiveBytes), mib(g.LastHeapGoalBytes), mib(g.LastStacksBytes), mib(g.LastGlobalsBytes), g.InWindow), "")
		}
		row("  threads, open files", fmt.Sprintf("%d, %d", x.Threads, x.OpenFiles), "")
		row("agent CPU, idle", fmt.Sprintf("%.2f %% of one core over %.0f s", x.CPUPercent, x.WindowSeconds),
			verdict(x.CPUPercent <= t.CPUPercent, fmt.Sprintf("≤ %.0f %%", t.CPUPercent)))
		dockerd := "not found"
		if x.DockerdFound {
			dockerd = fmt.Sprintf("%.2f %% (with all else on the daemon)", x.DockerdCPUPercent)
		}
		row("  same window: server, dockerd", fmt.Sprintf("%.2f %%, %s", x.ServerCPUPercent, dockerd), "")
		row("  instance state changes in the window", fmt.Sprintf("%d (%d of %d healthy at the end)", x.StateChanges, x.HealthyAtEnd, r.N), "0")
	}
	tw.Flush()
	if r.GCTrace {
		fmt.Fprintln(w, "\nthe agent ran with GODEBUG=gctrace=1 (one log line per collection); -gctrace=false runs it without")
	}
	if r.Error != "" {
		fmt.Fprintf(w, "\nthe run stopped early: %s\n", r.Error)
	}
}

// mib shows a size in MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
