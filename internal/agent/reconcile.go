package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/datadir"
	"github.com/dockfleet/dockfleet/internal/spec"
)

// maxParallel bounds the containers one agent creates, starts or removes at
// once: enough for a batch, few enough not to swamp a small host's engine.
const maxParallel = 8

// maxPendingEvents bounds the events an instance keeps for the server
// while it is away; the newest are kept.
const maxPendingEvents = 8

// desiredFile caches the last desired state in the data dir, so an agent
// restarted while the server is away keeps its containers and heals them.
const desiredFile = "desired.json"

// reconciler makes the node's containers match its desired state. It is
// level-triggered: every pass compares the whole desired state with every
// container the runtime lists; Docker events and new desired states only
// make the next pass come sooner.
type reconciler struct {
	*node
	dataDir string
	resync  time.Duration
	// onReconciled, if set, is called after each pass with its number.
	onReconciled func(pass uint64)
	// outboxReady is signalled when statuses wait in the outbox.
	outboxReady chan struct{}

	// mu guards the desired state, the map of instances, the outbox and
	// the host facts; each instance guards its own state (instance.mu,
	// taken only after mu, never before).
	mu      sync.Mutex
	desired *agentproto.DesiredState // nil until known: touch nothing
	// ordered is set while desired came on the current stream: the
	// server numbers what it sends on one stream in order, so an older
	// generation is a late copy to ignore. A new stream, perhaps to a
	// restarted server whose clock went back, starts afresh.
	ordered      bool
	insts        map[string]*instance
	outbox       map[string]bool // instances whose status the server has yet to hear
	hostErr      string
	factsChanged bool
	// holding is the state sequence of the desired state the agent holds
	// (holds), 0 if it holds none.
	holding      uint64
	runningCount int // the containers the last pass left running, desired or not
}

func newReconciler(rt Runtime, nodeID, dataDir string, resync time.Duration, clock clockwork.Clock, log *slog.Logger) *reconciler {
	r := &reconciler{node: &node{rt: rt, nodeID: nodeID, clock: clock, log: log, wake: make(chan struct{}, 1)},
		dataDir: dataDir, resync: resync, outboxReady: make(chan struct{}, 1),
		insts: map[string]*instance{}, outbox: map[string]bool{}}
	r.queue = r.queueStatus
	if b, err := os.ReadFile(filepath.Join(dataDir, desiredFile)); err == nil {
		var d agentproto.DesiredState
		if err := json.Unmarshal(b, &d); err == nil {
			r.desired = &d
		} else {
			log.Warn("ignoring unreadable cached desired state", "err", err)
		}
	}
	return r
}

// setDesired takes a new desired state from the server.
//
// It reports again each instance that already runs what d asks of it. The
// server forgets an instance's state when it moves it to another revision;
// if it moves it back before the agent saw the first move (a rollout
// rolled back at once: the server's one-slot mailbox sends only the newest
// state), the agent has nothing to change, so no state change would tell
// the server that the instance still runs.
//
// It ignores, and reports false for, a generation older than the one
// already taken on the same stream.
//
// It holds, and reports false for, a desired state from a stale store
// (holds).
func (r *reconciler) setDesired(d *agentproto.DesiredState) bool {
	r.mu.Lock()
	if r.ordered && r.desired != nil && d.Generation < r.desired.Generation {
		r.mu.Unlock()
		r.log.Warn("ignoring an older desired state", "generation", d.Generation, "have", r.desired.Generation)
		return false
	}
	if r.holds(d) {
		r.mu.Unlock()
		return false
	}
	r.desired, r.ordered = d, true
	resend := false
	for _, is := range d.Instances {
		if in := r.insts[is.Id]; in != nil && in.reports(is.SpecHash) {
			r.outbox[is.Id] = true
			resend = true
		}
	}
	r.mu.Unlock()
	if resend {
		select {
		case r.outboxReady <- struct{}{}:
		default:
		}
	}
	r.cache(d)
	r.trigger()
	return true
}

// holds reports whether d comes from a store older than the state the
// agent applied, and then holds: it takes nothing of d (no container is
// removed, replaced or started for it), keeps running and healing what
// it runs, and warns once. A store restored from an older backup sends
// such states: applying one would remove every container deployed since
// the backup. Hello and heartbeats carry the agent's sequence, which tells
// the server; a state at or above it (after dockfleet store
// accept-restore) is applied again. A state with no sequence (0) comes
// from a server before protocol version 3 and is applied as before; it
// keeps the sequence applied, so that the cache still holds the highest.
// r.mu is held.
func (r *reconciler) holds(d *agentproto.DesiredState) bool {
	var applied uint64
	if r.desired != nil {
		applied = r.desired.StateSeq
	}
	if d.StateSeq == 0 {
		d.StateSeq = applied
	}
	if d.StateSeq < applied {
		if r.holding == 0 {
			r.log.Warn("holding: the server sent a desired state from an older store than the one this agent applied "+
				"(restored from a backup?); keeping every container as it is until an operator decides (dockfleet store accept-restore on the server)",
				"state_seq", d.StateSeq, "applied_state_seq", applied, "generation", d.Generation)
		}
		r.holding = d.StateSeq
		return true
	}
	if r.holding != 0 {
		r.log.Info("hold ended: the server's desired state is at or above the state applied", "state_seq", d.StateSeq, "applied_state_seq", applied)
		r.holding = 0
	}
	return false
}

// stateSeq is the highest store state sequence the agent applied, and the
// sequence of the state it holds, 0 if none.
func (r *reconciler) stateSeq() (applied, holding uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.desired != nil {
		applied = r.desired.StateSeq
	}
	return applied, r.holding
}

// cache keeps d in the data dir for a restart while the server is away. A
// failure costs only that: the agent runs d now, and logs it so the
// operator can free the disk before such a restart.
func (r *reconciler) cache(d *agentproto.DesiredState) {
	b, err := json.Marshal(d)
	if err == nil {
		err = datadir.WriteFile(filepath.Join(r.dataDir, desiredFile), b, datadir.FileMode)
	}
	if err != nil {
		r.log.Error("caching the desired state; a restart while the server is away would run the previous one", "generation", d.Generation, "err", err)
	}
}

// newStream says that the desired states to come are on a new stream.
func (r *reconciler) newStream() {
	r.mu.Lock()
	r.ordered = false
	r.mu.Unlock()
}

// snapshot returns the generation applied and every instance's status, for hello.
func (r *reconciler) snapshot() (uint64, []*agentproto.InstanceStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var gen uint64
	if r.desired != nil {
		gen = r.desired.Generation
	}
	out := make([]*agentproto.InstanceStatus, 0, len(r.insts))
	for _, in := range r.insts {
		out = append(out, in.take())
	}
	clear(r.outbox) // hello carries them all
	return gen, out
}

func (r *reconciler) drainOutbox() []*agentproto.InstanceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*agentproto.InstanceStatus, 0, len(r.outbox))
	for id := range r.outbox {
		if in := r.insts[id]; in != nil {
			out = append(out, in.take())
		}
	}
	clear(r.outbox)
	return out
}

func (r *reconciler) hostError() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hostErr
}

func (r *reconciler) running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runningCount
}

// takeFactsChanged reports whether host facts may have changed (Docker came
// back) since the last call.
func (r *reconciler) takeFactsChanged() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.factsChanged
	r.factsChanged = false
	return c
}

func (r *reconciler) setHostErr(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if msg != r.hostErr {
		if msg == "" {
			r.log.Info("container runtime reachable again")
			r.factsChanged = true
		} else {
			r.log.Error("container runtime unreachable; retrying", "err", msg)
		}
	}
	r.hostErr = msg
}

// queueStatus marks an instance's status for the server and wakes the forwarder.
func (r *reconciler) queueStatus(id string) {
	r.mu.Lock()
	r.outbox[id] = true
	r.mu.Unlock()
	select {
	case r.outboxReady <- struct{}{}:
	default:
	}
}

// run reconciles until ctx ends, and returns once every health watch it
// started has ended.
func (r *reconciler) run(ctx context.Context) {
	resync := r.clock.NewTicker(r.resync)
	defer resync.Stop()
	var events <-chan struct{}
	var pass uint64
	r.trigger()
	for {
		if events == nil {
			if ch, err := r.rt.Events(ctx, r.nodeID); err == nil {
				events = ch
			}
		}
		select {
		case <-ctx.Done():
			r.stop()
			r.watches.Wait()
			return
		case <-r.wake:
		case <-resync.Chan():
		case _, ok := <-events:
			if !ok {
				events = nil
			}
		}
		r.reconcile(ctx)
		pass++
		if r.onReconciled != nil {
			r.onReconciled(pass)
		}
	}
}

// stop ends every instance's health watch and backoff timer.
func (r *reconciler) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, in := range r.insts {
		in.stop()
	}
}

// wanted is one desired instance with its decoded container spec.
type wanted struct {
	spec      *agentproto.InstanceSpec
	container spec.Container
}

func (r *reconciler) reconcile(ctx context.Context) {
	r.mu.Lock()
	d := r.desired
	r.mu.Unlock()
	if d == nil {
		return // until the server or the cache says what should run, change nothing
	}
	want := map[string]wanted{}
	for _, is := range d.Instances {
		var c spec.Container
		if err := json.Unmarshal(is.Container, &c); err != nil {
			r.ensureInstance(is.Id).setStatus(is.SpecHash, api.InstanceFailed, fmt.Sprintf("unreadable container spec: %v", err), "", "")
			continue
		}
		want[is.Id] = wanted{is, c}
	}

	cs, err := r.rt.List(ctx, r.nodeID)
	if err != nil {
		if ctx.Err() == nil {
			r.setHostErr(err.Error())
		}
		return
	}
	r.setHostErr("")

	byInst := map[string][]container.State{}
	var undesired []container.State
	for _, c := range cs {
		id := c.Labels[container.LabelInstance]
		if _, ok := want[id]; !ok {
			undesired = append(undesired, c)
			continue
		}
		byInst[id] = append(byInst[id], c)
	}
	r.forgetUndesired(want)

	// Instances converge concurrently, each one's own steps in order: a
	// batch of several instances on one node costs about one container's
	// time, not the sum (the Docker engine itself works in parallel).
	var (
		wg      sync.WaitGroup
		sem     = make(chan struct{}, maxParallel)
		running atomic.Int32
	)
	do := func(f func()) {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			f()
		}()
	}
	for _, c := range undesired {
		do(func() {
			r.log.Info("removing container no longer desired", "container_id", short(c.ID), "instance_id", c.Labels[container.LabelInstance])
			if err := r.rt.Remove(ctx, r.nodeID, c.ID); err != nil {
				r.log.Error("removing container", "container_id", short(c.ID), "err", err)
				if c.Running {
					running.Add(1) // it still runs: a drain waits for it
				}
			}
		})
	}
	for id, w := range want {
		in := r.ensureInstance(id)
		do(func() {
			if in.converge(ctx, w, byInst[id]) {
				running.Add(1)
			}
		})
	}
	wg.Wait()
	r.mu.Lock()
	r.runningCount = int(running.Load())
	r.mu.Unlock()
	// At debug level, so that tests of the real binary can wait for a pass.
	r.log.Debug("reconcile pass done", "instances", len(want), "running", running.Load())
}

func (r *reconciler) ensureInstance(id string) *instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.insts[id]
	if in == nil {
		in = newInstance(r.node, id)
		r.insts[id] = in
	}
	return in
}

func (r *reconciler) forgetUndesired(want map[string]wanted) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, in := range r.insts {
		if _, ok := want[id]; !ok {
			in.stop()
			delete(r.insts, id)
			delete(r.outbox, id)
		}
	}
}

// Events the agent reports of its own actions.
const (
	eventRecreated = "removed outside dockfleet, recreated"
	eventRestarted = "exited %d, restarted"
	eventReplaced  = "could not be restarted, recreated"
)

// containerConfig turns an instance's spec into the container to create.
func containerConfig(nodeID string, w wanted) container.Config {
	c := w.container
	labels := map[string]string{}
	for k, v := range c.Labels {
		labels[k] = v
	}
	labels[container.LabelManaged] = "true"
	labels[container.LabelNode] = nodeID
	labels[container.LabelInstance] = w.spec.Id
	labels[container.LabelDeployment] = w.spec.Deployment
	labels[container.LabelProject] = w.spec.Project
	labels[container.LabelSpecHash] = w.spec.SpecHash
	cfg := container.Config{
		// Names are unique per daemon: several agents may share one in tests,
		// and a replacement may briefly run beside its predecessor.
		Name:        fmt.Sprintf("dockfleet-%s-%s-%s", w.spec.Deployment, w.spec.Id, short(w.spec.SpecHash)),
		Image:       c.Image,
		Command:     c.Command,
		Args:        c.Args,
		Env:         c.Env,
		Labels:      labels,
		CPUs:        c.Resources.CPUs,
		MemoryBytes: int64(c.Resources.Memory),
	}
	for _, p := range c.Ports {
		cfg.Ports = append(cfg.Ports, container.Port{ContainerPort: p.ContainerPort, HostPort: p.HostPort, HostIP: p.HostIP, Protocol: p.Protocol})
	}
	for _, v := range c.Volumes {
		cfg.Mounts = append(cfg.Mounts, container.Mount{Bind: v.Type == spec.VolumeBind, Source: v.Source, Target: v.Target, ReadOnly: v.ReadOnly})
	}
	return cfg
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
