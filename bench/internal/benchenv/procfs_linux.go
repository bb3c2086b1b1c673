package benchenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux the project runs on (sysconf(_SC_CLK_TCK) needs cgo).
const clockTicks = 100

// ProcAttr makes a child die with the harness, even when the harness is
// killed and cannot clean up.
func ProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// CPUSeconds reads a process's user and system CPU time so far.
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// the fields after the last ')' start with field 3 (state).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// utime and stime are fields 14 and 15, i.e. 11 and 12 after state.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, f[11], f[12])
	}
	return float64(utime+stime) / clockTicks, nil
}

// Status reads the named fields of /proc/PID/status as numbers: sizes
// ("VmRSS", "VmHWM", "RssAnon", "RssFile": kB in the file) in bytes,
// counts ("Threads") as they are. A field the kernel does not show is an
// error.
func Status(pid int, fields ...string) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	want := map[string]bool{}
	for _, name := range fields {
		want[name] = true
	}
	out := make(map[string]int64, len(fields))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !want[k] {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 || len(fs) > 2 || (len(fs) == 2 && fs[1] != "kB") {
			return nil, fmt.Errorf("/proc/%d/status: %s: %q", pid, k, v)
		}
		n, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/%d/status: %s: %w", pid, k, err)
		}
		if len(fs) == 2 {
			n <<= 10
		}
		out[k] = n
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, name := range fields {
		if _, ok := out[name]; !ok {
			return nil, fmt.Errorf("/proc/%d/status: no %s", pid, name)
		}
	}
	return out, nil
}

// RSS is a process's resident memory in bytes.
func RSS(pid int) (int64, error) {
	s, err := Status(pid, "VmRSS")
	return s["VmRSS"], err
}

// OpenFiles counts a process's open file descriptors.
func OpenFiles(pid int) (int, error) {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(es), err
}

// OpenFileLimit is this process's RLIMIT_NOFILE (Go raises the soft limit
// to the hard one at start); children inherit it. 0 if unknown.
func OpenFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return l.Cur
}

// readTrim reads a small /proc file, trimmed; "" when it cannot.
func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Kernel is the running kernel's release.
func Kernel() string { return readTrim("/proc/sys/kernel/osrelease") }

// LoadAvg reads the 1, 5 and 15 minute load averages.
func LoadAvg() string {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// MemTotal reads MemTotal from /proc/meminfo; 0 when it cannot.
func MemTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
