package health_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/dockfleet/dockfleet/internal/health"
	"github.com/dockfleet/dockfleet/internal/spec"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Small intervals keep the tests fast; timeouts and waits are generous for
// loaded machines.
const (
	interval = 10 * time.Millisecond
	timeout  = 2 * time.Second
	wait     = 10 * time.Second
)

// watch runs Watch until the test ends and returns its reports.
func watch(t *testing.T, hc spec.HealthCheck, target health.Target) <-chan health.Status {
	t.Helper()
	return watchOn(t, nil, hc, target)
}

// watchOn runs WatchOn with clock until the test ends and returns its reports.
func watchOn(t *testing.T, clock clockwork.Clock, hc spec.HealthCheck, target health.Target) <-chan health.Status {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reports := make(chan health.Status, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		health.WatchOn(ctx, clock, hc, target, func(s health.Status) { reports <- s })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(wait):
			t.Errorf("Watch: still running %v after its context ended", wait)
		}
	})
	return reports
}

func next(t *testing.T, reports <-chan health.Status) health.Status {
	t.Helper()
	select {
	case s := <-reports:
		return s
	case <-time.After(wait):
		t.Fatalf("no health report after %v", wait)
		return health.Status{}
	}
}

func expectHealthy(t *testing.T, reports <-chan health.Status) {
	t.Helper()
	if s := next(t, reports); !s.Healthy {
		t.Fatalf("got %+v; want healthy", s)
	}
}

func expectUnhealthy(t *testing.T, reports <-chan health.Status, reason string) {
	t.Helper()
	s := next(t, reports)
	if s.Healthy || !strings.Contains(s.Reason, reason) {
		t.Fatalf("got %+v; want unhealthy with a reason containing %q", s, reason)
	}
}

// expectQuiet waits until probes, a count of the probes run, has grown by
// n, and fails if a report came meanwhile: only transitions are reported.
// It counts probes rather than waiting for a time, which a loaded machine
// could fill with fewer probes than it should.
func expectQuiet(t *testing.T, reports <-chan health.Status, probes func() int32, n int32) {
	t.Helper()
	want := probes() + n
	deadline := time.After(wait)
	for probes() < want {
		select {
		case s := <-reports:
			t.Fatalf("got report %+v; want none (only transitions are reported)", s)
		case <-deadline:
			t.Fatalf("%d probes after %v; want %d", probes(), wait, want)
		case <-time.After(interval):
		}
	}
	select {
	case s := <-reports:
		t.Fatalf("got report %+v; want none (only transitions are reported)", s)
	default:
	}
}

func hostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return host, n
}

func TestHTTPTransitions(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/healthz" {
			t.Errorf("probe path: got %s; want /healthz", r.URL.Path)
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	ip, port := hostPort(t, srv.Listener.Addr().String())

	reports := watch(t, spec.HealthCheck{
		HTTP:     &spec.HTTPCheck{Path: "healthz", Port: port}, // the leading slash is added
		Interval: spec.Duration(interval),
		Timeout:  spec.Duration(timeout),
		Retries:  3,
	}, health.Target{IP: ip})

	expectHealthy(t, reports)
	// Probing goes on after the first success, reporting nothing new.
	expectQuiet(t, reports, hits.Load, 3)

	status.Store(http.StatusInternalServerError)
	expectUnhealthy(t, reports, "http://"+srv.Listener.Addr().String()+"/healthz: status 500")
	expectQuiet(t, reports, hits.Load, 3)

	status.Store(http.StatusOK)
	expectHealthy(t, reports)
}

func TestHTTPStatusCodes(t *testing.T) {
	tests := []struct {
		status      int
		wantHealthy bool
	}{
		{http.StatusOK, true},
		{http.StatusNoContent, true},
		{http.StatusFound, true}, // not followed: the redirect target would 404
		{http.StatusNotFound, false},
		{http.StatusServiceUnavailable, false},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/healthz" {
					http.NotFound(w, r)
					return
				}
				if tt.status == http.StatusFound {
					http.Redirect(w, r, "/elsewhere", tt.status)
					return
				}
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			ip, port := hostPort(t, srv.Listener.Addr().String())
			reports := watch(t, spec.HealthCheck{
				HTTP:     &spec.HTTPCheck{Path: "/healthz", Port: port},
				Interval: spec.Duration(interval),
				Timeout:  spec.Duration(timeout),
				Retries:  1,
			}, health.Target{IP: ip})
			if tt.wantHealthy {
				expectHealthy(t, reports)
			} else {
				expectUnhealthy(t, reports, "status "+strconv.Itoa(tt.status))
			}
		})
	}
}

func TestHTTPTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ip, port := hostPort(t, srv.Listener.Addr().String())
	reports := watch(t, spec.HealthCheck{
		HTTP:     &spec.HTTPCheck{Path: "/", Port: port},
		Interval: spec.Duration(50 * time.Millisecond),
		Timeout:  spec.Duration(20 * time.Millisecond),
		Retries:  2,
	}, health.Target{IP: ip})
	expectUnhealthy(t, reports, "/: timed out after 20ms")
}

func TestTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ip, port := hostPort(t, l.Addr().String())
	reports := watch(t, spec.HealthCheck{
		TCP:      &spec.TCPCheck{Port: port},
		Interval: spec.Duration(interval),
		Timeout:  spec.Duration(timeout),
		Retries:  2,
	}, health.Target{IP: ip})
	expectHealthy(t, reports)
	l.Close()
	expectUnhealthy(t, reports, "tcp "+l.Addr().String()+": connect: connection refused")
}

// execer is an Execer whose exit code the test sets.
type execer struct {
	code atomic.Int32
	err  atomic.Pointer[error]
	last atomic.Pointer[string]
}

func (e *execer) Exec(_ context.Context, nodeID, id string, cmd []string) (int, error) {
	s := nodeID + "/" + id + ": " + strings.Join(cmd, " ")
	e.last.Store(&s)
	if err := e.err.Load(); err != nil {
		return 0, *err
	}
	return int(e.code.Load()), nil
}

func TestExec(t *testing.T) {
	ex := &execer{}
	reports := watch(t, spec.HealthCheck{
		Exec:     &spec.ExecCheck{Command: []string{"/hello", "-check", "http://127.0.0.1:8080/healthz"}},
		Interval: spec.Duration(interval),
		Retries:  2,
	}, health.Target{NodeID: "n1", ContainerID: "c1", Exec: ex})
	expectHealthy(t, reports)
	if got, want := *ex.last.Load(), "n1/c1: /hello -check http://127.0.0.1:8080/healthz"; got != want {
		t.Errorf("exec: got %q; want %q", got, want)
	}
	ex.code.Store(1)
	expectUnhealthy(t, reports, `exec ["/hello" "-check" "http://127.0.0.1:8080/healthz"]: exit code 1`)
	ex.code.Store(0)
	expectHealthy(t, reports)
	err := errors.New("container is not running")
	ex.err.Store(&err)
	expectUnhealthy(t, reports, "container is not running")
}

func TestStartPeriod(t *testing.T) {
	ex := &execer{}
	ex.code.Store(1)
	start := time.Now()
	reports := watch(t, spec.HealthCheck{
		Exec:        &spec.ExecCheck{Command: []string{"check"}},
		Interval:    spec.Duration(interval),
		Retries:     1,
		StartPeriod: spec.Duration(300 * time.Millisecond),
	}, health.Target{Exec: ex})
	expectUnhealthy(t, reports, "exit code 1")
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("unhealthy after %v; want no report during the 300ms start period", d)
	}
}

func TestNoAddress(t *testing.T) {
	tests := []struct {
		name string
		hc   spec.HealthCheck
	}{
		{"http", spec.HealthCheck{HTTP: &spec.HTTPCheck{Path: "/", Port: 80}}},
		{"tcp", spec.HealthCheck{TCP: &spec.TCPCheck{Port: 80}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.hc.Interval = spec.Duration(interval)
			tt.hc.Timeout = spec.Duration(timeout)
			tt.hc.Retries = 1
			reports := watch(t, tt.hc, health.Target{})
			expectUnhealthy(t, reports, "container has no IP address")
		})
	}
}

func TestWatchEndsWithContext(t *testing.T) {
	// A probe that hangs must not keep Watch running past its context.
	release := make(chan struct{})
	hanging := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hanging <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ip, port := hostPort(t, srv.Listener.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		health.Watch(ctx, spec.HealthCheck{
			HTTP:     &spec.HTTPCheck{Path: "/", Port: port},
			Interval: spec.Duration(time.Hour),
		}, health.Target{IP: ip}, func(s health.Status) { t.Errorf("got report %+v; want none", s) })
	}()
	select {
	case <-hanging: // the probe reached the server, which holds it
	case <-time.After(wait):
		t.Fatalf("no probe reached the server after %v", wait)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Watch: still running after its context ended")
	}
}

// A process that comes up just after its container started is seen healthy
// at the next fast probe, not a whole interval later; meanwhile its early
// failures count no faster than once per interval. The clock is a fake one
// that the test moves, so a loaded machine cannot stretch the times.
func TestFastFirstSuccess(t *testing.T) {
	ex := &failFirst{n: 3} // the process is up from the 4th probe on
	clock := clockwork.NewFakeClock()
	begin := clock.Now()
	reports := watchOn(t, clock, spec.HealthCheck{
		Exec:     &spec.ExecCheck{Command: []string{"check"}},
		Interval: spec.Duration(2 * time.Second),
		Timeout:  spec.Duration(time.Second),
		Retries:  1,
	}, health.Target{Exec: ex})
	// With retries 1 the first probe's failure reports unhealthy; the fast
	// probes that follow may not report it again within the interval.
	expectUnhealthy(t, reports, "exit code 1")
	for range 3 {
		advance(t, clock, 100*time.Millisecond)
	}
	expectHealthy(t, reports)
	if took, probes := clock.Since(begin), ex.calls.Load(); took != 300*time.Millisecond || probes != 4 {
		t.Errorf("healthy %v after the watch began, at probe %d; want 300ms, at the 4th probe, 100ms apart: well under the 2s interval", took, probes)
	}
}

// failFirst is an Execer whose first n execs exit 1 and the others 0.
type failFirst struct {
	n     int32
	calls atomic.Int32
}

func (e *failFirst) Exec(context.Context, string, string, []string) (int, error) {
	if e.calls.Add(1) <= e.n {
		return 1, nil
	}
	return 0, nil
}

// advance moves clock by d once Watch holds a timer of it: the wait for its
// next probe, or the timeout of a probe under way (moving the clock then
// only shortens the wait that follows, which ends at once). Either way the
// next probe starts at the clock's new time.
func advance(t *testing.T, clock *clockwork.FakeClock, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("Watch holds no timer of the clock after %v: %v", wait, err)
	}
	clock.Advance(d)
}

func TestEarlyFailuresCountOncePerInterval(t *testing.T) {
	ex := &execer{}
	ex.code.Store(1)
	begin := time.Now()
	reports := watch(t, spec.HealthCheck{
		Exec:     &spec.ExecCheck{Command: []string{"check"}},
		Interval: spec.Duration(300 * time.Millisecond),
		Timeout:  spec.Duration(100 * time.Millisecond),
		Retries:  3,
	}, health.Target{Exec: ex})
	expectUnhealthy(t, reports, "exit code 1")
	if took := time.Since(begin); took < 550*time.Millisecond {
		t.Errorf("unhealthy after %v; want 3 failures at the 300ms interval (≥ 600ms), not at the fast start cadence", took)
	}
}
