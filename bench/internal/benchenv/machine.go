package benchenv

import (
	"context"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Machine describes the host a benchmark ran on, for its report.
type Machine struct {
	Date          time.Time `json:"date"`
	CPUs          int       `json:"cpus"`
	MemoryBytes   int64     `json:"memoryBytes"`
	Kernel        string    `json:"kernel"`
	Go            string    `json:"go"`
	Dockfleet     string    `json:"dockfleet"`
	OpenFileLimit uint64    `json:"openFileLimit"`
	// LoadAvg is the host's (1, 5, 15 minutes) when the run began and
	// when it ended (the caller sets it): other work on the host skews
	// the figures.
	LoadAvg    string `json:"loadAvg"`
	LoadAvgEnd string `json:"loadAvgEnd"`
}

// ReadMachine describes this host now, and the dockfleet binary bin by its
// `version` output.
func ReadMachine(ctx context.Context, bin string) Machine {
	m := Machine{Date: time.Now().UTC().Truncate(time.Second), CPUs: runtime.NumCPU(), MemoryBytes: MemTotal(),
		Kernel: Kernel(), Go: runtime.Version(), OpenFileLimit: OpenFileLimit(), LoadAvg: LoadAvg()}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "version").Output(); err == nil {
		m.Dockfleet = strings.TrimSpace(string(out))
	}
	return m
}
