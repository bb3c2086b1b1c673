package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/health"
	"github.com/dockfleet/dockfleet/internal/restart"
)

// instance owns one desired instance: its status, pinned digest, restart
// history, backoff timer and health watch. Each pass hands it its wanted
// spec and its containers; decide says what to do and converge does it.
// Only its own methods change its state (the pass through converge, its
// health watch through setStatus), so an invariant of one instance (the
// watch probes watchedID's container) lives under one lock, in.mu, and
// instances never wait for each other.
//
// Locking: in.mu is never held across runtime calls, nor while calling
// n.queue. The reconciler may take in.mu while holding its own lock (to
// report), never the other way round.
type instance struct {
	id string
	n  *node

	mu     sync.Mutex
	status observed
	// digest is the pinned image the instance's container runs, once the
	// agent pulled it; the server pins the first one it hears of.
	digest string
	// restarts counts the restarts of the container of spec restartsOf.
	restarts   restart.Tracker
	restartsOf string
	// events are what the agent did on its own (restarted, recreated),
	// for the server's event log; sent with the next report.
	events []string
	// watch is the running health watch, for watchedID's container.
	watch     context.CancelFunc
	watchedID string
	// retry, if set, brings the pass at which the backoff allows the next
	// attempt; one per instance, however many passes come meanwhile.
	retry clockwork.Timer
}

// observed is an instance's observed state, kept as a plain value (protobuf
// messages must not be copied) and turned into a message when sent.
type observed struct {
	state                     api.InstanceState
	reason, containerID, hash string
	at                        time.Time
}

func newInstance(n *node, id string) *instance {
	return &instance{id: id, n: n, status: observed{state: api.InstancePending}}
}

// node is what the instances of a node share with its reconciler: set up
// once, then only read, apart from the channels and the wait group.
type node struct {
	rt     Runtime
	nodeID string
	clock  clockwork.Clock
	log    *slog.Logger
	wake   chan struct{}
	// queue marks an instance's status for the server.
	queue func(id string)
	// watches are the health-watch goroutines; the reconciler's run waits for them.
	watches sync.WaitGroup
}

// trigger asks for a pass soon.
func (n *node) trigger() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// take returns the instance's report and forgets its events: they are sent once.
func (in *instance) take() *agentproto.InstanceStatus {
	in.mu.Lock()
	defer in.mu.Unlock()
	s := in.status
	st := &agentproto.InstanceStatus{InstanceId: in.id, State: string(s.state), Reason: s.reason, ContainerId: s.containerID,
		SpecHash: s.hash, ObservedAt: s.at.UnixNano(), ImageDigest: in.digest, Restarts: uint32(in.restarts.Restarts()), Events: in.events}
	in.events = nil
	return st
}

// reports reports whether the instance has a state for spec hash to report.
func (in *instance) reports(hash string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.status.state != "" && in.status.hash == hash
}

// stop ends the instance's health watch and backoff timer.
func (in *instance) stop() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.stopWatch()
	if in.retry != nil {
		in.retry.Stop()
		in.retry = nil
	}
}

// stopWatch ends the health watch; in.mu is held.
func (in *instance) stopWatch() {
	if in.watch != nil {
		in.watch()
		in.watch, in.watchedID = nil, ""
	}
}

// setStatus records the instance's state and queues it for the server when
// it changed, or when event (if not empty) is to be reported.
func (in *instance) setStatus(hash string, state api.InstanceState, reason, containerID, event string) {
	log := in.n.log
	in.mu.Lock()
	if event != "" {
		// Bounded: events wait here only while the server is away.
		if len(in.events) >= maxPendingEvents {
			in.events = in.events[1:]
		}
		in.events = append(in.events, event)
		log.Info("instance event", "instance_id", in.id, "event", event)
	}
	s := observed{state: state, reason: reason, containerID: containerID, hash: hash}
	if event == "" && s == (observed{in.status.state, in.status.reason, in.status.containerID, in.status.hash, time.Time{}}) {
		in.mu.Unlock()
		return
	}
	s.at = in.n.clock.Now()
	in.status = s
	in.mu.Unlock()
	log.Info("instance state", "instance_id", in.id, "state", state, "reason", reason)
	in.n.queue(in.id)
}

// converge runs one pass for the instance: it decides on what it knows and
// what runs, then does it. It reports whether its container is running.
func (in *instance) converge(ctx context.Context, w wanted, cs []container.State) bool {
	n := in.n
	in.mu.Lock()
	k := known{status: in.status, restarts: in.restarts, restartsOf: in.restartsOf}
	if in.watch != nil {
		k.watched = in.watchedID
	}
	p := decide(k, w, cs, n.clock.Now())
	in.restarts, in.restartsOf = p.restarts, p.restartsOf
	in.mu.Unlock()

	for _, c := range p.remove {
		n.log.Info("replacing container that differs from its spec", "container_id", short(c.ID), "instance_id", in.id)
		if err := n.rt.Remove(ctx, n.nodeID, c.ID); err != nil {
			n.log.Error("removing container", "container_id", short(c.ID), "err", err)
		}
	}
	in.mu.Lock()
	if p.stopWatch {
		in.stopWatch()
	}
	if p.wait > 0 {
		if in.retry == nil {
			in.retry = n.clock.AfterFunc(p.wait, n.trigger)
		} else {
			in.retry.Reset(p.wait)
		}
	}
	in.mu.Unlock()
	if s := p.status; s != nil {
		in.setStatus(w.spec.SpecHash, s.state, s.reason, s.containerID, "")
	}
	switch p.act {
	case actCreate:
		in.create(ctx, w, p.event)
	case actRestart:
		in.restart(ctx, w, p.target)
	case actWatch:
		in.watchHealth(ctx, w, p.target)
	}
	return p.running
}

// failedStart records an attempt that could not start the instance: it
// has failed, and the next attempt waits its backoff.
func (in *instance) failedStart(hash string, err error, containerID string) {
	in.mu.Lock()
	in.restarts.Failed(in.n.clock.Now())
	in.mu.Unlock()
	in.setStatus(hash, api.InstanceFailed, err.Error(), containerID, "")
}

// create makes and starts the instance's container; event, if not empty,
// is reported once it runs.
func (in *instance) create(ctx context.Context, w wanted, event string) {
	n, hash, c := in.n, w.spec.SpecHash, w.container
	in.setStatus(hash, api.InstancePulling, "", "", "")
	digest, err := n.rt.EnsureImage(ctx, c.Image)
	if err != nil {
		in.failedStart(hash, err, "")
		return
	}
	in.mu.Lock()
	in.digest = digest
	in.mu.Unlock()
	in.setStatus(hash, api.InstanceStarting, "", "", "")
	cid, err := n.rt.Create(ctx, containerConfig(n.nodeID, w))
	if err != nil {
		in.failedStart(hash, err, "")
		return
	}
	if err := n.rt.Start(ctx, n.nodeID, cid); err != nil {
		in.failedStart(hash, err, cid)
		return
	}
	in.setStatus(hash, api.InstanceRunning, "", cid, event)
	// The next pass finds it running, starts its health watch and counts it.
	n.trigger()
}

// restart starts an exited container again. One that cannot be started
// again (removed from outside dockfleet as it exited: "marked for
// removal") is replaced by a new one.
func (in *instance) restart(ctx context.Context, w wanted, c *container.State) {
	n := in.n
	n.log.Info("restarting exited container", "instance_id", in.id, "container_id", short(c.ID))
	if err := n.rt.Start(ctx, n.nodeID, c.ID); err != nil {
		n.log.Warn("restarting container failed; replacing it", "instance_id", in.id, "container_id", short(c.ID), "err", err)
		if err := n.rt.Remove(ctx, n.nodeID, c.ID); err != nil {
			// Its removal is under way: its destroy event brings the pass
			// that finds it gone and creates the new one.
			n.log.Info("container still being removed; recreating it once it is gone", "instance_id", in.id, "container_id", short(c.ID), "err", err)
			return
		}
		in.create(ctx, w, eventReplaced)
		return
	}
	in.mu.Lock()
	in.restarts.Restarted(n.clock.Now())
	in.mu.Unlock()
	in.setStatus(w.spec.SpecHash, api.InstanceRunning, "", c.ID, fmt.Sprintf(eventRestarted, c.ExitCode))
	n.trigger()
}

// watchHealth starts the health watch of the instance's running container.
func (in *instance) watchHealth(ctx context.Context, w wanted, c *container.State) {
	n, hash, id := in.n, w.spec.SpecHash, c.ID
	wctx, cancel := context.WithCancel(ctx)
	in.mu.Lock()
	in.watch, in.watchedID = cancel, id
	in.mu.Unlock()
	target := health.Target{IP: c.IP, ContainerID: id, NodeID: n.nodeID, Exec: n.rt}
	hc := *w.container.HealthCheck
	n.watches.Add(1) // run waits for it
	go func() {
		defer n.watches.Done()
		health.Watch(wctx, hc, target, func(s health.Status) {
			if wctx.Err() != nil {
				return
			}
			if s.Healthy {
				in.setStatus(hash, api.InstanceHealthy, "", id, "")
				n.trigger() // a start-first replacement may now take over
			} else {
				in.setStatus(hash, api.InstanceUnhealthy, s.Reason, id, "")
			}
		})
	}()
}
