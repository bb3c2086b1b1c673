package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"
)

// process is a dockfleet server or sim the benchmark started.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
	// expected is set when the benchmark ends the process itself, so
	// that its exit is no failure.
	mu       sync.Mutex
	expected bool
}

// startProcess runs bin with args; its stdout goes to stdout and its
// stderr to stderr (the same writer for both is allowed).
func startProcess(name, bin string, env []string, stdout, stderr io.Writer, args ...string) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = procAttr()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// unexpectedExit is an error when the process ended without being asked to.
func (p *process) unexpectedExit() error {
	p.mu.Lock()
	expected := p.expected
	p.mu.Unlock()
	if expected || !p.exited() {
		return nil
	}
	return fmt.Errorf("%s exited: %v; see %s", p.name, p.err, p.logPath)
}

// stop ends the process with SIGTERM, as a user would, and kills it if it
// is not gone within grace. It returns how long the process took to exit.
func (p *process) stop(grace time.Duration) time.Duration {
	p.mu.Lock()
	p.expected = true
	p.mu.Unlock()
	begin := time.Now()
	if p.exited() {
		return 0
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return time.Since(begin)
}

// lineWriter copies a process's output to a file and hands each complete
// line to a function. exec.Cmd calls Write from one goroutine at a time.
type lineWriter struct {
	file   *os.File
	onLine func(line []byte)
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	if _, err := w.file.Write(p); err != nil {
		return 0, err
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.onLine(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	// Do not keep a large backing array for ever.
	if len(w.buf) == 0 && cap(w.buf) > 1<<20 {
		w.buf = nil
	}
	return len(p), nil
}

// simEvent is one line of `dockfleet sim --events` (internal/sim.Event).
type simEvent struct {
	T          int64  `json:"t"`
	Agent      string `json:"agent"`
	Event      string `json:"event"`
	Generation uint64 `json:"generation"`
	Instances  int    `json:"instances"`
	Error      string `json:"error"`
}

// desired is a desired state an agent took and acked.
type desired struct {
	at         time.Time
	generation uint64
	instances  int
}

// agentRecord is what the events told of one simulated agent.
type agentRecord struct {
	connected      bool
	connects       int
	lastConnect    time.Time
	lastDisconnect time.Time
	disconnects    int
	desired        []desired
}

// tracker follows every sim process's events.
type tracker struct {
	mu     sync.Mutex
	agents map[string]*agentRecord
	failed []string // "agent: error" of agents that stopped for good
	bad    int      // lines that were not events
}

func newTracker() *tracker { return &tracker{agents: map[string]*agentRecord{}} }

func (t *tracker) line(b []byte) {
	var e simEvent
	if err := json.Unmarshal(b, &e); err != nil || e.Agent == "" {
		t.mu.Lock()
		t.bad++
		t.mu.Unlock()
		return
	}
	at := time.Unix(0, e.T)
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.agents[e.Agent]
	if a == nil {
		a = &agentRecord{}
		t.agents[e.Agent] = a
	}
	switch e.Event {
	case "connected":
		a.connected, a.lastConnect = true, at
		a.connects++
	case "disconnected":
		a.connected, a.lastDisconnect = false, at
		a.disconnects++
	case "desired":
		a.desired = append(a.desired, desired{at: at, generation: e.Generation, instances: e.Instances})
	case "failed":
		t.failed = append(t.failed, e.Agent+": "+e.Error)
	}
}

// failure reports an agent that stopped for good.
func (t *tracker) failure() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.failed) == 0 {
		return nil
	}
	return fmt.Errorf("%d simulated agents failed; first: %s", len(t.failed), t.failed[0])
}

// connectedSince returns, for each agent connected now whose latest
// connection came at or after since, when it came; and how many agents
// are connected now in all.
func (t *tracker) connectedSince(since time.Time) (times []time.Time, connected int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range t.agents {
		if !a.connected {
			continue
		}
		connected++
		if !a.lastConnect.Before(since) {
			times = append(times, a.lastConnect)
		}
	}
	return times, connected
}

// firstDesired returns, for each agent, when it first acked a desired
// state of at least one instance at or after since.
func (t *tracker) firstDesired(since time.Time) []time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []time.Time
	for _, a := range t.agents {
		var first time.Time
		for _, d := range a.desired {
			if d.instances > 0 && !d.at.Before(since) && (first.IsZero() || d.at.Before(first)) {
				first = d.at
			}
		}
		if !first.IsZero() {
			out = append(out, first)
		}
	}
	return out
}

// disconnectsSince counts the agents whose stream ended at or after since.
func (t *tracker) disconnectsSince(since time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, a := range t.agents {
		if a.disconnects > 0 && !a.lastDisconnect.Before(since) {
			n++
		}
	}
	return n
}

// latest is the latest of times; zero for none.
func latest(times []time.Time) time.Time {
	if len(times) == 0 {
		return time.Time{}
	}
	return slices.MaxFunc(times, func(a, b time.Time) int { return a.Compare(b) })
}
