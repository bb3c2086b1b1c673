package benchenv

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
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

// stat reads the fields of /proc/PID/stat after the command name, the
// first being field 3 (state).
func stat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// the fields after the last ')' start with field 3 (state).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// cstime, field 17, is the last this package reads.
	if len(f) < 15 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return f, nil
}

// seconds sums stat fields (counted from 1, as proc(5) does) of clock ticks.
func seconds(pid int, f []string, fields ...int) (float64, error) {
	var ticks uint64
	for _, n := range fields {
		t, err := strconv.ParseUint(f[n-3], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: field %d is %q", pid, n, f[n-3])
		}
		ticks += t
	}
	return float64(ticks) / clockTicks, nil
}

// CPUSeconds reads a process's user and system CPU time so far.
func CPUSeconds(pid int) (float64, error) {
	f, err := stat(pid)
	if err != nil {
		return 0, err
	}
	return seconds(pid, f, 14, 15) // utime, stime
}

// TreeCPUSeconds reads the user and system CPU time so far of a process
// and its children: its own, its children's that it has waited for
// (cutime, cstime), and its live children's. PostgreSQL's postmaster
// forks a backend per connection and waits for it, so this is all of a
// PostgreSQL server's CPU.
func TreeCPUSeconds(pid int) (float64, error) {
	f, err := stat(pid)
	if err != nil {
		return 0, err
	}
	total, err := seconds(pid, f, 14, 15, 16, 17) // utime, stime, cutime, cstime
	if err != nil {
		return 0, err
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	ppid := strconv.Itoa(pid)
	for _, p := range procs {
		child, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		f, err := stat(child)
		if err != nil || f[1] != ppid { // field 4: the parent's ID; gone since listed
			continue
		}
		if s, err := seconds(child, f, 14, 15); err == nil {
			total += s
		}
	}
	return total, nil
}

// EstablishedTo counts the established TCP connections on this host's
// side of each IPv4 listening address in addrs ("127.0.0.1:7443"): a
// server's accepted connections. It reads /proc/net/tcp, which lists the
// sockets of this network namespace.
func EstablishedTo(addrs ...string) (map[string]int, error) {
	want := map[string]string{} // "0100007F:1D13" as the kernel prints it → addr
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil || !ap.Addr().Is4() {
			return nil, fmt.Errorf("%q: want an IPv4 HOST:PORT", a)
		}
		ip := ap.Addr().As4()
		// The kernel prints the address as the number its four bytes in
		// network order make on this host, the port as it is.
		want[fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(ip[:]), ap.Port())] = a
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := make(map[string]int, len(addrs))
	for _, a := range addrs {
		out[a] = 0
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st ...; st 01 is ESTABLISHED.
		fs := strings.Fields(sc.Text())
		if len(fs) < 4 || fs[3] != "01" {
			continue
		}
		if a, ok := want[fs[1]]; ok {
			out[a]++
		}
	}
	return out, sc.Err()
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
