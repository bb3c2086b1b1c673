package benchenv

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
)

func TestLineWriter(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	w := &LineWriter{File: f, OnLine: func(b []byte) { lines = append(lines, string(b)) }}
	for _, chunk := range []string{"one\ntw", "o\n", "", "three\nfour\nfi", "ve"} {
		if n, err := w.Write([]byte(chunk)); err != nil || n != len(chunk) {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	if want := []string{"one", "two", "three", "four"}; !slices.Equal(lines, want) {
		t.Errorf("lines = %q; want %q (the unfinished line waits)", lines, want)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "one\ntwo\nthree\nfour\nfive" {
		t.Errorf("file holds %q; want everything written", b)
	}
}

func TestProcfs(t *testing.T) {
	requireLinux(t)
	pid := os.Getpid()
	st, err := Status(pid, "VmRSS", "VmHWM", "Threads")
	if err != nil {
		t.Fatal(err)
	}
	if st["VmRSS"] < 1<<20 || st["VmHWM"] < st["VmRSS"] || st["Threads"] < 1 {
		t.Errorf("Status = %v; want an RSS of at least 1 MiB, a peak at least as high, a thread", st)
	}
	if _, err := Status(pid, "NoSuchField"); err == nil {
		t.Error("Status of a field the kernel does not show: no error")
	}
	// Burn CPU until the kernel's 10 ms ticks count some; a loaded machine
	// may give this process none in a short window.
	var cpu float64
	for end := time.Now().Add(10 * time.Second); cpu <= 0 && err == nil && time.Now().Before(end); {
		for spin := time.Now().Add(20 * time.Millisecond); time.Now().Before(spin); {
		}
		cpu, err = CPUSeconds(pid)
	}
	if err != nil || cpu <= 0 {
		t.Errorf("CPUSeconds = %v, %v; want more than 0", cpu, err)
	}
	if n, err := OpenFiles(pid); err != nil || n < 3 {
		t.Errorf("OpenFiles = %d, %v; want stdin, stdout and stderr at least", n, err)
	}
	if OpenFileLimit() == 0 || MemTotal() == 0 || Kernel() == "" || LoadAvg() == "" {
		t.Error("the machine's limit, memory, kernel or load is unknown")
	}
}

func TestEstablishedTo(t *testing.T) {
	requireLinux(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	idle, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	for range 3 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	got, err := EstablishedTo(l.Addr().String(), idle.Addr().String())
	// The dialing sides' sockets have other local ports: not counted.
	if err != nil || got[l.Addr().String()] != 3 || got[idle.Addr().String()] != 0 {
		t.Errorf("EstablishedTo = %v, %v; want 3 on %s and 0 on %s", got, err, l.Addr(), idle.Addr())
	}
	if _, err := EstablishedTo("localhost:80"); err == nil {
		t.Error("EstablishedTo of a name: no error")
	}
}

func TestTreeCPUSeconds(t *testing.T) {
	requireLinux(t)
	// A child that burns CPU and is waited for counts in its parent's tree.
	busy := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
	if err := busy.Run(); err != nil {
		t.Fatal(err)
	}
	child := busy.ProcessState.UserTime() + busy.ProcessState.SystemTime()
	own, err := CPUSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	tree, err := TreeCPUSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Ticks of 10 ms: the child's time in ticks may round down by one.
	if tree-own < child.Seconds()-0.02 || child <= 0 {
		t.Errorf("TreeCPUSeconds = %.2f, own %.2f; want the child's %.2f more", tree, own, child.Seconds())
	}
}

// requireLinux skips a test of /proc off Linux, and fails it when CI=true:
// CI runs on Linux, where it must run.
func requireLinux(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("reads Linux's /proc; CI runs on %s", runtime.GOOS)
		}
		t.Skip("reads Linux's /proc")
	}
}
