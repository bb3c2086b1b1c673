// Package health runs the agent's health probes against its containers:
// HTTP (GET, 2xx or 3xx passes), TCP (a connection opens) and exec (a
// command run in the container exits 0), as a spec.HealthCheck describes.
// Watch probes one container for as long as it runs and reports each change
// between healthy and unhealthy, which the agent sends to the server at once.
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/spec"
)

// Execer runs a command in a container and returns its exit code; the
// agent's runtime is one.
type Execer interface {
	Exec(ctx context.Context, nodeID, id string, cmd []string) (int, error)
}

// Target is the container a check probes.
type Target struct {
	// IP is the container's address, for HTTP and TCP checks.
	IP string
	// NodeID and ContainerID name the container for exec checks, which run
	// through Exec; Exec may be nil when the check is not an exec check.
	NodeID      string
	ContainerID string
	Exec        Execer
}

// Status is a container's health as Watch reports it.
type Status struct {
	Healthy bool
	// Reason is why the last probe failed, when Healthy is false.
	Reason string
}

// Defaults for a HealthCheck's zero fields. The spec package fills these in
// for users; they guard Watch against a zero check probing in a tight loop.
const (
	defaultInterval = 10 * time.Second
	defaultRetries  = 3
)

// Watch probes target as hc says until ctx ends, and calls report, from
// Watch's goroutine, each time the target's health changes.
//
// The first probe runs at once and the next ones every Interval (every
// 100 ms until the first success), each bounded by Timeout (by Interval when
// Timeout is zero). Probes never overlap: one that outlasts Interval delays
// the next. The first
// success reports healthy; Retries consecutive failures report unhealthy,
// with the last failure's reason. Failures during StartPeriod do not count,
// but a success ends the start period: from then on every failure counts.
func Watch(ctx context.Context, hc spec.HealthCheck, target Target, report func(Status)) {
	WatchOn(ctx, nil, hc, target, report)
}

// WatchOn is Watch on clock, which times the waits between probes, their
// timeouts and the start period; nil is the real clock. Tests move a fake
// one.
func WatchOn(ctx context.Context, clock clockwork.Clock, hc spec.HealthCheck, target Target, report func(Status)) {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	interval := time.Duration(hc.Interval)
	if interval <= 0 {
		interval = defaultInterval
	}
	timeout := time.Duration(hc.Timeout)
	if timeout <= 0 {
		timeout = interval
	}
	retries := hc.Retries
	if retries < 1 {
		retries = defaultRetries
	}
	m := &monitor{retries: retries, startEnds: clock.Now().Add(time.Duration(hc.StartPeriod))}
	p := newProber(hc, target, timeout)
	// Until the first success, probes come every startInterval: a process
	// that is up 20 ms after its container started is seen healthy then,
	// not a whole interval later. Those early probes can only bring good
	// news: a failure counts at most once per interval, as it would at the
	// normal cadence, so retries keep their meaning.
	passed := false // whether a probe has passed yet
	nextCount := clock.Now()
	for {
		// The timeout is a timer of clock's that cancels the probe, not a
		// context deadline, which would read the real clock.
		probeCtx, cancel := context.WithCancelCause(ctx)
		begun := clock.Now()
		timer := clock.AfterFunc(timeout, func() { cancel(errProbeTimeout) })
		err := p.probe(probeCtx)
		timer.Stop()
		cancel(nil)
		if ctx.Err() != nil {
			return // the probe failed because Watch is over, not the target
		}
		now := clock.Now()
		if err == nil || passed || !now.Before(nextCount) {
			if err != nil {
				nextCount = now.Add(interval)
			}
			passed = passed || err == nil
			if st, changed := m.observe(now, err); changed {
				report(st)
			}
		}
		wait := interval
		if !passed {
			wait = min(startInterval, interval)
		}
		select {
		case <-ctx.Done():
			return
		case <-clock.After(clock.Until(begun.Add(wait))):
		}
	}
}

// errProbeTimeout cancels a probe that outlasted its timeout.
var errProbeTimeout = errors.New("health: probe timed out")

// startInterval is how often a container is probed until it first passes.
const startInterval = 100 * time.Millisecond

// monitor turns probe results into health transitions.
type monitor struct {
	retries   int
	startEnds time.Time
	reported  bool // whether a status was reported yet
	healthy   bool // the last status reported
	started   bool // whether a probe passed: that ends the start period
	failures  int  // consecutive failures that count
}

// observe records a probe's result (err nil: passed) at now, and returns
// the new status when it differs from the last one reported.
func (m *monitor) observe(now time.Time, err error) (Status, bool) {
	if err == nil {
		m.started = true
		m.failures = 0
		if m.reported && m.healthy {
			return Status{}, false
		}
		m.reported, m.healthy = true, true
		return Status{Healthy: true}, true
	}
	if !m.started && now.Before(m.startEnds) {
		return Status{}, false
	}
	m.failures++
	if m.failures < m.retries || (m.reported && !m.healthy) {
		return Status{}, false
	}
	m.reported, m.healthy = true, false
	return Status{Reason: err.Error()}, true
}

// prober runs one kind of probe.
type prober struct {
	hc      spec.HealthCheck
	target  Target
	timeout time.Duration // for the reason of a probe that timed out
	client  *http.Client
}

func newProber(hc spec.HealthCheck, target Target, timeout time.Duration) *prober {
	p := &prober{hc: hc, target: target, timeout: timeout}
	if hc.HTTP != nil {
		p.client = &http.Client{
			// No proxy: the target is a container on this host. No keep-alive:
			// each probe must see that the server still accepts connections.
			Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
			// A redirect is an answer: 3xx passes, as Kubernetes and Docker agree.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return p
}

// probe runs the check once; nil means it passed. Its errors are the
// reasons Watch reports.
func (p *prober) probe(ctx context.Context) error {
	switch hc := p.hc; {
	case hc.HTTP != nil:
		return p.probeHTTP(ctx, hc.HTTP)
	case hc.TCP != nil:
		return p.probeTCP(ctx, hc.TCP)
	case hc.Exec != nil:
		return p.probeExec(ctx, hc.Exec)
	default:
		return errors.New("health check has no http, tcp or exec probe")
	}
}

func (p *prober) probeHTTP(ctx context.Context, c *spec.HTTPCheck) error {
	if p.target.IP == "" {
		return errors.New("http probe: container has no IP address")
	}
	path := c.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	u := "http://" + net.JoinHostPort(p.target.IP, strconv.Itoa(c.Port)) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", u, err)
	}
	req.Header.Set("User-Agent", "dockfleet-health/1")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", u, p.probeError(ctx, err))
	}
	defer resp.Body.Close()
	// Read a little so the server is not cut off mid-answer; the body is not judged.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("%s: status %d", u, resp.StatusCode)
	}
	return nil
}

func (p *prober) probeTCP(ctx context.Context, c *spec.TCPCheck) error {
	if p.target.IP == "" {
		return errors.New("tcp probe: container has no IP address")
	}
	addr := net.JoinHostPort(p.target.IP, strconv.Itoa(c.Port))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp %s: %w", addr, p.probeError(ctx, err))
	}
	return conn.Close()
}

func (p *prober) probeExec(ctx context.Context, c *spec.ExecCheck) error {
	if p.target.Exec == nil {
		return errors.New("exec probe: no runtime to run it")
	}
	code, err := p.target.Exec.Exec(ctx, p.target.NodeID, p.target.ContainerID, c.Command)
	if err != nil {
		return fmt.Errorf("exec %q: %w", c.Command, p.probeError(ctx, err))
	}
	if code != 0 {
		return fmt.Errorf("exec %q: exit code %d", c.Command, code)
	}
	return nil
}

// probeError names a probe's timeout plainly rather than as the error of
// whichever call it interrupted.
func (p *prober) probeError(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), errProbeTimeout) {
		return fmt.Errorf("timed out after %v", p.timeout)
	}
	// The caller names the URL or address already; these repeat it.
	if uerr, ok := errors.AsType[*url.Error](err); ok {
		err = uerr.Err
	}
	if oerr, ok := errors.AsType[*net.OpError](err); ok {
		err = oerr.Err
	}
	return err
}
