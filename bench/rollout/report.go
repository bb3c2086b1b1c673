package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/bench/internal/benchenv"
)

// machine is what the numbers were measured on.
type machine struct {
	Date          time.Time `json:"date"`
	CPUs          int       `json:"cpus"` // as nproc counts them
	MemoryBytes   int64     `json:"memoryBytes"`
	Kernel        string    `json:"kernel"`
	OS            string    `json:"os"`
	Docker        string    `json:"docker"`
	DockerAPI     string    `json:"dockerAPI"`
	StorageDriver string    `json:"storageDriver"`
	CgroupDriver  string    `json:"cgroupDriver"`
	CgroupVersion string    `json:"cgroupVersion"`
	Go            string    `json:"go"`
	Dockfleet     string    `json:"dockfleet"`
	// OtherContainers were running on the daemon, and LoadAvg is the
	// host's (1, 5, 15 minutes), when the run began and when it ended:
	// other work on the host skews the times.
	OtherContainers    int    `json:"otherContainers"`
	OtherContainersEnd int    `json:"otherContainersEnd"`
	LoadAvg            string `json:"loadAvg"`
	LoadAvgEnd         string `json:"loadAvgEnd"`
}

func (m machine) summary() string {
	return fmt.Sprintf("%d CPUs, %.1f GiB, Docker %s (%s, cgroup v%s/%s), kernel %s, load %s", m.CPUs, float64(m.MemoryBytes)/(1<<30),
		m.Docker, m.StorageDriver, m.CgroupVersion, m.CgroupDriver, m.Kernel, m.LoadAvg)
}

// phases are one system's times, in seconds.
type phases struct {
	Create float64 `json:"create"`
	Update float64 `json:"update"`
	Total  float64 `json:"total"`
}

func (p phases) get(phase string) float64 {
	switch phase {
	case phaseCreate:
		return p.Create
	case phaseUpdate:
		return p.Update
	}
	return p.Total
}

// report is the benchmark's result; -o json prints it as it is.
type report struct {
	Command  string  `json:"command"`
	RunID    string  `json:"runId"`
	N        int     `json:"n"`
	Batch    int     `json:"batch"`
	Runs     int     `json:"runs"`
	Check    string  `json:"dockfleetCheck"`
	Parallel int     `json:"rawParallel"`
	RawGated bool    `json:"rawGatedCreate"`
	Poll     string  `json:"poll"`
	Machine  machine `json:"machine"`

	// Measurements are every run's times per system; Median the medians
	// the ratios are computed from.
	Measurements map[string][]phases `json:"measurements"`
	Median       map[string]phases   `json:"median"`
	// Ratios are dockfleet's median over swarm's and raw's, per phase.
	Ratios  map[string]phases  `json:"ratios"`
	Targets map[string]float64 `json:"targets"`

	systems []string
}

func newReport(ctx context.Context, cfg config, d *docker) *report {
	r := &report{Command: cfg.command, RunID: cfg.runID, N: cfg.n, Batch: cfg.batch, Runs: cfg.runs, Check: cfg.check,
		Parallel: cfg.parallel, RawGated: cfg.rawGated, Poll: cfg.poll.String(), Measurements: map[string][]phases{}, systems: cfg.systems,
		Targets: map[string]float64{"dockfleet/swarm": targetVsSwarm, "dockfleet/raw": targetVsRaw}}
	m := &r.Machine
	m.Date = time.Now().UTC().Truncate(time.Second)
	m.CPUs = runtime.NumCPU()
	m.MemoryBytes = benchenv.MemTotal()
	m.Go = runtime.Version()
	if info, err := d.c.Info(ctx, client.InfoOptions{}); err == nil {
		i := info.Info
		m.Kernel, m.OS, m.Docker = i.KernelVersion, i.OperatingSystem, i.ServerVersion
		m.StorageDriver, m.CgroupDriver, m.CgroupVersion = i.Driver, i.CgroupDriver, i.CgroupVersion
	}
	if v, err := d.c.ServerVersion(ctx, client.ServerVersionOptions{}); err == nil {
		m.DockerAPI = v.APIVersion
	}
	if out, err := exec.CommandContext(ctx, cfg.bin, "version").Output(); err == nil {
		m.Dockfleet = strings.TrimSpace(string(out))
	}
	m.OtherContainers, m.LoadAvg = d.otherContainers(ctx), benchenv.LoadAvg()
	return r
}

func (r *report) add(system string, m measurement) {
	p := phases{Create: m.Create.Seconds(), Update: m.Update.Seconds()}
	p.Total = p.Create + p.Update
	r.Measurements[system] = append(r.Measurements[system], p)
}

// finish notes the host's state at the end and computes the medians and
// the ratios.
func (r *report) finish(ctx context.Context, d *docker) {
	// After Ctrl-C too.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	r.Machine.OtherContainersEnd, r.Machine.LoadAvgEnd = d.otherContainers(ctx), benchenv.LoadAvg()
	r.compute()
}

// compute fills in Median and Ratios from Measurements. Each phase's
// median is taken on its own, so the total's median need not be the sum of
// the others.
func (r *report) compute() {
	r.Median = map[string]phases{}
	for s, ms := range r.Measurements {
		r.Median[s] = phases{
			Create: median(ms, func(p phases) float64 { return p.Create }),
			Update: median(ms, func(p phases) float64 { return p.Update }),
			Total:  median(ms, func(p phases) float64 { return p.Total }),
		}
	}
	r.Ratios = map[string]phases{}
	df, ok := r.Median[sysDockfleet]
	if !ok {
		return
	}
	for _, other := range []string{sysSwarm, sysRaw} {
		o, ok := r.Median[other]
		if !ok {
			continue
		}
		r.Ratios[sysDockfleet+"/"+other] = phases{Create: df.Create / o.Create, Update: df.Update / o.Update, Total: df.Total / o.Total}
	}
}

func median(ms []phases, f func(phases) float64) float64 {
	vs := make([]float64, len(ms))
	for i, m := range ms {
		vs[i] = f(m)
	}
	slices.Sort(vs)
	if len(vs) == 0 {
		return 0
	}
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

func (r *report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable prints the medians and the ratios against the targets.
func (r *report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "machine: %s\n", r.Machine.summary())
	fmt.Fprintf(w, "dockfleet: %s; %s\n", r.Machine.Dockfleet, r.Machine.Date.Format(time.RFC3339))
	fmt.Fprintf(w, "other containers on the daemon: %d at the start, %d at the end; load at the end %s\n",
		r.Machine.OtherContainers, r.Machine.OtherContainersEnd, r.Machine.LoadAvgEnd)
	fmt.Fprintf(w, "command: %s\n", r.Command)
	what := "time"
	if r.Runs > 1 {
		what = fmt.Sprintf("median of %d runs", r.Runs)
	}
	raw := fmt.Sprintf("raw creates %d at once", r.Parallel)
	if r.RawGated {
		raw = "raw creates in health-gated batches"
	}
	fmt.Fprintf(w, "n=%d, batch=%d, dockfleet %s check, %s; %s\n\n", r.N, r.Batch, r.Check, raw, what)
	if len(r.Median) == 0 {
		fmt.Fprintln(w, "no system finished a run")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{"phase"}
	for _, s := range r.systems {
		header = append(header, s)
	}
	ratios := []string{}
	for _, k := range []string{sysDockfleet + "/" + sysSwarm, sysDockfleet + "/" + sysRaw} {
		if _, ok := r.Ratios[k]; ok {
			ratios = append(ratios, k)
			header = append(header, k)
		}
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, ph := range []string{phaseCreate, phaseUpdate, phaseTotal} {
		row := []string{ph}
		for _, s := range r.systems {
			if m, ok := r.Median[s]; ok {
				row = append(row, fmt.Sprintf("%.2fs", m.get(ph)))
			} else {
				row = append(row, "-")
			}
		}
		for _, k := range ratios {
			v, target := r.Ratios[k].get(ph), r.Targets[k]
			verdict := "met"
			if v > target {
				verdict = "MISSED"
			}
			// Two decimals, or three where two would round onto the target
			// and hide which side of it the ratio is.
			ratio := fmt.Sprintf("%.2f", v)
			if ratio == fmt.Sprintf("%.2f", target) && v != target {
				ratio = fmt.Sprintf("%.3f", v)
			}
			row = append(row, fmt.Sprintf("%s (≤ %.1f %s)", ratio, target, verdict))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
}
