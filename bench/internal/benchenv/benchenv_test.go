package benchenv

import (
	"os"
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
	if runtime.GOOS != "linux" {
		t.Skip("reads Linux's /proc")
	}
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
