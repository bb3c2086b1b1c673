package agent

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dockfleet/dockfleet/internal/agentproto"
)

// cpuSampler turns the kernel's cumulative CPU counters into a percentage
// over the time between two samples.
type cpuSampler struct {
	busy, total uint64
}

// sample returns the host's CPU use since the last sample, in percent of all
// CPUs; 0 on the first call or where /proc/stat is unavailable.
func (c *cpuSampler) sample() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0
	}
	var busy, total uint64
	for i, f := range fields[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle and iowait
			busy += v
		}
	}
	var pct float64
	if c.total != 0 && total > c.total {
		pct = 100 * float64(busy-c.busy) / float64(total-c.total)
	}
	c.busy, c.total = busy, total
	return pct
}

// hostUsage reads the host's CPU and memory use.
func hostUsage(cpu *cpuSampler) *agentproto.Usage {
	u := &agentproto.Usage{CpuPercent: cpu.sample()}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return u
	}
	defer f.Close()
	var total, avail int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "MemTotal":
			total = n * 1024
		case "MemAvailable":
			avail = n * 1024
		}
	}
	u.MemoryBytes = total - avail
	return u
}

// SharedHostUsage returns a Hooks.HostUsage for agents that share one host,
// as simulated agents in one process do: it reads /proc at most once a
// second for all of them, instead of twice per agent and heartbeat.
func SharedHostUsage() func() *agentproto.Usage {
	var (
		mu   sync.Mutex
		cpu  cpuSampler
		last *agentproto.Usage
		at   time.Time
	)
	return func() *agentproto.Usage {
		mu.Lock()
		defer mu.Unlock()
		if last == nil || time.Since(at) >= time.Second {
			last, at = hostUsage(&cpu), time.Now()
		}
		return &agentproto.Usage{CpuPercent: last.CpuPercent, MemoryBytes: last.MemoryBytes}
	}
}
