package agent

import (
	"runtime"
	"testing"
)

func TestSharedHostUsage(t *testing.T) {
	usage := SharedHostUsage()
	a, b := usage(), usage()
	if a == b {
		t.Fatal("two agents got the same message; each heartbeat needs its own")
	}
	if a.MemoryBytes != b.MemoryBytes || a.CpuPercent != b.CpuPercent {
		t.Errorf("within a second: %v then %v; want one sample shared", a, b)
	}
	if runtime.GOOS == "linux" && a.MemoryBytes <= 0 {
		t.Errorf("memory in use %d; want the host's, from /proc/meminfo", a.MemoryBytes)
	}
}
