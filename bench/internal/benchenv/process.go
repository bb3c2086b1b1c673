package benchenv

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Process is a dockfleet server, agent or sim a benchmark started.
type Process struct {
	Name string
	// LogPath is where its log goes, for error messages; the caller sets it.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
	// expected is set when the benchmark ends the process itself, so
	// that its exit is no failure.
	mu       sync.Mutex
	expected bool
}

// StartProcess runs bin with args, with env added to the harness's own;
// its stdout goes to stdout and its stderr to stderr (the same writer for
// both is allowed). The process dies with the harness (ProcAttr).
func StartProcess(name, bin string, env []string, stdout, stderr io.Writer, args ...string) (*Process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = ProcAttr()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process's ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// UnexpectedExit is an error when the process ended without being asked to.
func (p *Process) UnexpectedExit() error {
	p.mu.Lock()
	expected := p.expected
	p.mu.Unlock()
	if expected || !p.Exited() {
		return nil
	}
	return fmt.Errorf("%s exited: %v; see %s", p.Name, p.err, p.LogPath)
}

// Stop ends the process with SIGTERM, as a user would, and kills it if it
// is not gone within grace. It returns how long the process took to exit.
func (p *Process) Stop(grace time.Duration) time.Duration {
	p.mu.Lock()
	p.expected = true
	p.mu.Unlock()
	begin := time.Now()
	if p.Exited() {
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

// LineWriter copies a process's output to a file and hands each complete
// line to a function. exec.Cmd calls Write from one goroutine at a time.
type LineWriter struct {
	File   *os.File
	OnLine func(line []byte)
	buf    []byte
}

func (w *LineWriter) Write(p []byte) (int, error) {
	if _, err := w.File.Write(p); err != nil {
		return 0, err
	}
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.OnLine(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	// Do not keep a large backing array for ever.
	if len(w.buf) == 0 && cap(w.buf) > 1<<20 {
		w.buf = nil
	}
	return len(p), nil
}
