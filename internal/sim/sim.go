// Package sim runs simulated agents, many to a process, for scale tests of
// the server: hollow nodes, as Kubernetes' kubemark has. Each is the real
// agent (internal/agent) with its own enrollment, key and certificate, its
// own mTLS stream and the real protocol; only the Docker adapter is swapped
// for an in-memory runtime (internal/fakert), one per agent, so that each
// node's containers stay its own.
//
// A simulated container is healthy HealthyAfter after it starts, or never
// on the agents UnhealthyFraction picks. Only exec health checks see this:
// nothing listens at a simulated container's address, so HTTP and TCP
// checks fail. Deployments for simulated nodes use exec health checks, or
// none.
//
// Run keeps each agent's identity in DataDir/<name>: a simulator started
// again with the same DataDir and NamePrefix reconnects its nodes instead
// of enrolling new ones. It reports progress on Config.Progress and, for
// benchmarks, one JSON line per event on Config.Events (see Event).
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/pki"
)

// Defaults for a Config's zero fields.
const (
	// DefaultRamp lets 200 agents enroll or connect at once: enough to
	// bring 10,000 up in well under a minute, few enough that the server
	// is not hit by every TLS handshake at once.
	DefaultRamp = 200
	// DefaultResyncInterval is three times the real agent's: a simulated
	// node's resync finds nothing the runtime did not announce, and
	// thousands of them would spend the CPU the server is measured with.
	DefaultResyncInterval = 30 * time.Second
)

// Config configures a simulation.
type Config struct {
	// Server is the server's agent endpoint, "host:port" or
	// "https://host:port", or several, comma-separated (agent.Config.Server):
	// each agent starts at a random one.
	Server string
	// Token is the enrollment token; it needs a use for every agent that
	// has no identity in DataDir yet, and none is needed when all have one.
	Token string
	// CACertFile, if set, is trusted instead of the CA fingerprint in the token.
	CACertFile string
	// Agents is how many agents to run, at least 1.
	Agents int
	// DataDir holds one directory per agent, named after it; required.
	DataDir string
	// HealthyAfter is how long a container runs before its exec health
	// checks pass; zero passes them at once.
	HealthyAfter time.Duration
	// UnhealthyFraction, from 0 to 1, is the share of agents whose
	// containers never pass an exec health check: round(Agents ×
	// UnhealthyFraction) of them, spread evenly, always the same ones for
	// the same Agents (with 0.1, every tenth: <prefix>-10, <prefix>-20, …).
	UnhealthyFraction float64
	// SourceIPs are local addresses the agents dial the server from, in
	// turn, for more ephemeral ports than one address gives (DESIGN §10:
	// 127.0.0.2 and up on loopback); none lets the system choose.
	SourceIPs []string
	// NamePrefix names the agents <prefix>-1 to <prefix>-<Agents>; default
	// "<hostname>-sim". Node names are unique on a server: simulators of
	// one server need prefixes of their own.
	NamePrefix string
	// Labels are every agent's node labels.
	Labels map[string]string
	// Ramp is how many agents may be enrolling or connecting for the first
	// time at once; default DefaultRamp.
	Ramp int
	// ResyncInterval is how often an agent reconciles without a trigger;
	// default DefaultResyncInterval.
	ResyncInterval time.Duration
	// MaxBackoff caps an agent's wait between reconnections; zero means
	// the agent's default (agent.DefaultConfig).
	MaxBackoff time.Duration
	// Logger takes the simulator's own messages; nil discards them.
	Logger *slog.Logger
	// AgentLogger, if set, takes every agent's log, scoped with its name;
	// nil discards them.
	AgentLogger *slog.Logger
	// Progress, if set, gets a status line every second while the counts
	// change, and a line when all agents are connected (again).
	Progress io.Writer
	// Events, if set, gets one JSON object per line for every Event.
	Events io.Writer
}

// Errors Run returns for a Config it cannot run.
var (
	ErrNoAgents = errors.New("sim: at least one agent is needed")
	ErrConfig   = errors.New("sim: invalid configuration")
)

func (c *Config) check() error {
	switch {
	case c.Agents < 1:
		return ErrNoAgents
	case c.Server == "":
		return fmt.Errorf("%w: the server's agent address is required", ErrConfig)
	case c.DataDir == "":
		return fmt.Errorf("%w: a data directory is required", ErrConfig)
	case c.UnhealthyFraction < 0 || c.UnhealthyFraction > 1:
		return fmt.Errorf("%w: unhealthy fraction %g is not between 0 and 1", ErrConfig, c.UnhealthyFraction)
	case c.HealthyAfter < 0:
		return fmt.Errorf("%w: healthy-after %s is negative", ErrConfig, c.HealthyAfter)
	case c.Ramp < 0:
		return fmt.Errorf("%w: ramp %d is negative", ErrConfig, c.Ramp)
	}
	for _, s := range c.SourceIPs {
		if net.ParseIP(s) == nil {
			return fmt.Errorf("%w: source address %q is not an IP address", ErrConfig, s)
		}
	}
	return nil
}

func (c *Config) setDefaults() error {
	if c.NamePrefix == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("sim: no name prefix and no hostname: %w", err)
		}
		c.NamePrefix = h + "-sim"
	}
	if c.Ramp == 0 {
		c.Ramp = DefaultRamp
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = DefaultResyncInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// unhealthy reports whether agent i (from 0) is one of the
// UnhealthyFraction whose containers never pass a health check: exactly
// round(n × f) of n agents, evenly spread.
func unhealthy(i, n int, f float64) bool {
	m := int(f*float64(n) + 0.5)
	return (i+1)*m/n != i*m/n
}

// Run runs the simulated agents until ctx ends, then stops them all and
// returns nil once they have stopped. It returns an error, after stopping
// the others, if an agent cannot run: its enrollment was refused (the token
// is used up, or its name is taken), or its data dir is unusable.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.check(); err != nil {
		return err
	}
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	dialers, err := newDialers(cfg.SourceIPs)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("sim: creating data dir: %w", err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &sim{cfg: cfg, log: cfg.Logger, start: time.Now(), stop: cancel, usage: agent.SharedHostUsage()}
	stopping := context.AfterFunc(runCtx, func() { s.stopping.Store(true) })
	defer stopping()
	var bg sync.WaitGroup // the event writer and the progress reporter
	if cfg.Events != nil {
		s.events = newEventLog(cfg.Events, cfg.Logger)
		bg.Go(s.events.run)
	}
	progressDone := make(chan struct{})
	if cfg.Progress != nil {
		bg.Go(func() { s.reportProgress(progressDone) })
	}
	s.log.Debug("simulation starting", "agents", cfg.Agents, "server", cfg.Server, "data_dir", cfg.DataDir,
		"unhealthy", s.countUnhealthy(), "source_ips", len(cfg.SourceIPs))

	var agents sync.WaitGroup
	slots := make(chan struct{}, cfg.Ramp)
	for i := range cfg.Agents {
		select {
		case slots <- struct{}{}:
		case <-runCtx.Done():
		}
		if runCtx.Err() != nil {
			break
		}
		n, a, err := s.newNode(i, dialers, slots)
		if err != nil {
			n.release()
			s.fail(err)
			break
		}
		s.started.Add(1)
		s.emit(n, "started", 0, 0, "")
		agents.Go(func() {
			defer n.release()
			// An agent stopped while it enrolled returns ctx's error.
			if err := a.Run(runCtx); err != nil && runCtx.Err() == nil {
				s.emit(n, "failed", 0, 0, err.Error())
				s.fail(fmt.Errorf("sim: agent %s: %w", n.name, err))
			}
		})
	}
	<-runCtx.Done()
	agents.Wait()
	if s.events != nil {
		s.events.close()
	}
	close(progressDone)
	bg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// sim is one simulation's shared state. Its counters are updated from the
// agents' hooks.
type sim struct {
	cfg   Config
	log   *slog.Logger
	start time.Time
	stop  context.CancelFunc
	// stopping is set once the simulation ends: the hooks then report
	// nothing, as every agent disconnects.
	stopping atomic.Bool
	events   *eventLog // nil without Config.Events
	// usage is every agent's host usage: they all run on this host.
	usage func() *agentproto.Usage

	started    atomic.Int64 // agents whose Run began
	identities atomic.Int64 // of them, those that had an identity already
	connected  atomic.Int64 // agents connected now
	enrolled   atomic.Int64 // agents that enrolled and connected
	reconnects atomic.Int64 // connections after an agent's first
	desired    atomic.Int64 // desired states acked

	mu     sync.Mutex
	err    error     // the first agent's failure
	lostAt time.Time // when not all agents were connected any more
	all    bool      // whether all agents were ever connected at once
}

// node is one simulated agent.
type node struct {
	s           *sim
	name        string
	quoted      []byte // name as a JSON string, for events
	hadIdentity bool
	connected   atomic.Bool // whether it ever connected
	slots       chan struct{}
	releaseOnce sync.Once
}

// release gives up the agent's ramp slot, once it connected or stopped.
func (n *node) release() {
	n.releaseOnce.Do(func() { <-n.slots })
}

func (s *sim) newNode(i int, dialers []func(context.Context, string) (net.Conn, error), slots chan struct{}) (*node, *agent.Agent, error) {
	n := &node{s: s, name: fmt.Sprintf("%s-%d", s.cfg.NamePrefix, i+1), slots: slots}
	n.quoted = quote(n.name)
	dir := filepath.Join(s.cfg.DataDir, n.name)
	_, err := pki.LoadIdentity(dir)
	n.hadIdentity = err == nil
	if n.hadIdentity {
		s.identities.Add(1)
	}

	rt := fakert.New()
	switch {
	case unhealthy(i, s.cfg.Agents, s.cfg.UnhealthyFraction):
		rt.SetHealth(fakert.Unhealthy)
	case s.cfg.HealthyAfter > 0:
		rt.SetHealth(fakert.HealthyAfter(s.cfg.HealthyAfter))
	}
	log := slog.New(slog.DiscardHandler)
	if s.cfg.AgentLogger != nil {
		log = s.cfg.AgentLogger.With("agent", n.name)
	}
	cfg := agent.DefaultConfig()
	cfg.Server, cfg.Token, cfg.CACertFile = s.cfg.Server, s.cfg.Token, s.cfg.CACertFile
	cfg.DataDir, cfg.Name, cfg.Labels = dir, n.name, s.cfg.Labels
	cfg.Runtime, cfg.Logger = rt, log
	cfg.ResyncInterval = s.cfg.ResyncInterval
	if s.cfg.MaxBackoff != 0 {
		cfg.MaxBackoff = s.cfg.MaxBackoff
	}
	cfg.Hooks = agent.Hooks{
		OnConnected:    n.onConnected,
		OnDisconnected: n.onDisconnected,
		HostUsage:      s.usage,
		OnDesired:      n.onDesired,
	}
	if len(dialers) > 0 {
		cfg.Hooks.Dialer = dialers[i%len(dialers)]
	}
	a, err := agent.New(cfg)
	if err != nil {
		return n, nil, fmt.Errorf("sim: agent %s: %w", n.name, err)
	}
	return n, a, nil
}

func (n *node) onConnected(string) {
	s := n.s
	if s.stopping.Load() {
		return
	}
	now := time.Now()
	if n.connected.Swap(true) {
		s.reconnects.Add(1)
	} else {
		if !n.hadIdentity {
			s.enrolled.Add(1)
		}
		n.release()
	}
	if int(s.connected.Add(1)) == s.cfg.Agents {
		s.allConnected(now)
	}
	s.emitAt(now, n, "connected", 0, 0, "")
}

func (n *node) onDisconnected(err error) {
	s := n.s
	if s.stopping.Load() {
		return
	}
	now := time.Now()
	if int(s.connected.Add(-1)) == s.cfg.Agents-1 {
		s.mu.Lock()
		if s.lostAt.IsZero() {
			s.lostAt = now
		}
		s.mu.Unlock()
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	s.emitAt(now, n, "disconnected", 0, 0, msg)
}

func (n *node) onDesired(generation uint64, instances int) {
	s := n.s
	if s.stopping.Load() {
		return
	}
	s.desired.Add(1)
	s.emit(n, "desired", generation, instances, "")
}

// allConnected records that every agent is connected at now: the first
// time since the start, or again since some were lost.
func (s *sim) allConnected(now time.Time) {
	s.mu.Lock()
	var msg string
	switch {
	case !s.all:
		s.all = true
		msg = fmt.Sprintf("sim: all %d agents connected in %s (%d goroutines)", s.cfg.Agents, now.Sub(s.start).Round(time.Millisecond),
			runtime.NumGoroutine())
	case !s.lostAt.IsZero():
		msg = fmt.Sprintf("sim: all %d agents connected again %s after the first one lost its connection",
			s.cfg.Agents, now.Sub(s.lostAt).Round(time.Millisecond))
	}
	s.lostAt = time.Time{}
	s.mu.Unlock()
	switch {
	case msg == "":
	case s.cfg.Progress != nil:
		fmt.Fprintln(s.cfg.Progress, msg)
	default:
		s.log.Info(msg)
	}
}

// fail records the first agent failure and ends the simulation.
func (s *sim) fail(err error) {
	s.mu.Lock()
	if s.err == nil && !s.stopping.Load() {
		s.err = err
		s.log.Error("stopping the simulation", "err", err)
	}
	s.mu.Unlock()
	s.stop()
}

func (s *sim) countUnhealthy() int {
	n := 0
	for i := range s.cfg.Agents {
		if unhealthy(i, s.cfg.Agents, s.cfg.UnhealthyFraction) {
			n++
		}
	}
	return n
}

// reportProgress writes a status line every second while something
// changes, until done is closed.
func (s *sim) reportProgress(done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last string
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		line := fmt.Sprintf("started %d/%d (%d with an identity), connected %d, enrolled %d, reconnects %d, desired states %d",
			s.started.Load(), s.cfg.Agents, s.identities.Load(), s.connected.Load(), s.enrolled.Load(),
			s.reconnects.Load(), s.desired.Load())
		if line == last {
			continue
		}
		last = line
		fmt.Fprintf(s.cfg.Progress, "sim: %s: %s, goroutines %d\n", time.Since(s.start).Round(time.Second), line, runtime.NumGoroutine())
	}
}

func (s *sim) emit(n *node, event string, generation uint64, instances int, msg string) {
	s.emitAt(time.Now(), n, event, generation, instances, msg)
}

func (s *sim) emitAt(t time.Time, n *node, event string, generation uint64, instances int, msg string) {
	if s.events != nil {
		s.events.add(Event{T: t.UnixNano(), Agent: n.name, Event: event, Generation: generation, Instances: instances, Error: msg}, n.quoted)
	}
}
