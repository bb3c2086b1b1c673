package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// debugClient reads the server's --debug-addr listener: Go's pprof
// handlers over plain HTTP on loopback.
type debugClient struct {
	base string // http://127.0.0.1:PORT
	hc   *http.Client
}

func newDebugClient(addr string) *debugClient {
	return &debugClient{base: "http://" + addr, hc: &http.Client{Transport: &http.Transport{}}}
}

func (d *debugClient) close() { d.hc.CloseIdleConnections() }

func (d *debugClient) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return resp, nil
}

// memStats is what the benchmark reads of the server's runtime.MemStats.
type memStats struct {
	heapAlloc  int64 // bytes of live heap objects, right after a collection
	stackInuse int64 // "Stack = inuse / sys"
	sys        int64 // all the runtime obtained from the OS
	numGC      int64
}

// memStats reads the server's runtime.MemStats, which the text heap
// profile ends with; with collect, after two garbage collections (the heap
// profile's gc=1), so that HeapAlloc is the live heap: what sync.Pools
// hold survives one collection (goose's migration parser keeps 16 MiB of
// buffers in one after the server starts).
func (d *debugClient) memStats(ctx context.Context, collect bool) (memStats, error) {
	p := "/debug/pprof/heap?debug=1"
	if collect {
		p += "&gc=1"
		if _, err := d.read(ctx, p); err != nil {
			return memStats{}, err
		}
	}
	return d.read(ctx, p)
}

func (d *debugClient) read(ctx context.Context, path string) (memStats, error) {
	resp, err := d.get(ctx, path)
	if err != nil {
		return memStats{}, err
	}
	defer resp.Body.Close()
	return parseMemStats(resp.Body)
}

// parseMemStats reads the "# Name = value" lines of a text heap profile.
func parseMemStats(r io.Reader) (memStats, error) {
	var m memStats
	fields := map[string]*int64{"HeapAlloc": &m.heapAlloc, "Stack": &m.stackInuse, "Sys": &m.sys, "NumGC": &m.numGC}
	found := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = ")
		if p := fields[name]; ok && p != nil && strings.HasPrefix(sc.Text(), "# ") {
			value, _, _ = strings.Cut(value, " / ")
			v, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				return m, fmt.Errorf("heap profile: %s = %q: %w", name, value, err)
			}
			*p = v
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("reading the heap profile: %w", err)
	}
	if found != len(fields) {
		return m, fmt.Errorf("heap profile: %d of the %d runtime.MemStats fields read", found, len(fields))
	}
	return m, nil
}

// goroutines counts the server's goroutines: the first line of the text
// goroutine profile is "goroutine profile: total N".
func (d *debugClient) goroutines(ctx context.Context) (int, error) {
	resp, err := d.get(ctx, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("reading the goroutine profile: %w", err)
	}
	return parseGoroutines(line)
}

func parseGoroutines(line string) (int, error) {
	n, ok := strings.CutPrefix(strings.TrimSpace(line), "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("goroutine profile starts %q", line)
	}
	return strconv.Atoi(n)
}

// save writes a profile to path: "heap" (after a collection),
// "goroutine" (as text, goroutines grouped by stack), or a CPU profile of
// d (rounded up to whole seconds).
func (d *debugClient) save(ctx context.Context, profile string, cpu time.Duration, path string) error {
	p := "/debug/pprof/heap?gc=1"
	switch profile {
	case "cpu":
		p = fmt.Sprintf("/debug/pprof/profile?seconds=%d", int((cpu+time.Second-1)/time.Second))
	case "goroutine":
		p = "/debug/pprof/goroutine?debug=1"
	}
	resp, err := d.get(ctx, p)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("saving %s: %w", path, err)
	}
	return f.Close()
}
