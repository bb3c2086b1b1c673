package agent

import (
	"cmp"
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
	"github.com/dockfleet/dockfleet/internal/health"
	"github.com/dockfleet/dockfleet/internal/restart"
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
	rt      Runtime
	nodeID  string
	dataDir string
	resync  time.Duration
	clock   clockwork.Clock
	log     *slog.Logger
	wake    chan struct{}
	// onReconciled, if set, is called after each pass with its number.
	onReconciled func(pass uint64)
	// watches are the health-watch goroutines; run waits for them.
	watches sync.WaitGroup
	// outboxReady is signalled when statuses wait in the outbox.
	outboxReady chan struct{}

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
	runningCount int // the containers the last pass left running, desired or not
}

// instance is what the agent tracks of one desired instance.
type instance struct {
	status observed
	// digest is the pinned image the instance's container runs, once the
	// agent pulled it; the server pins the first one it hears of.
	digest string
	// restarts counts the restarts of the container of spec restartsOf: a
	// new spec starts afresh, so a revision never inherits the crash loop
	// of the one before.
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

func (in *instance) proto(id string) *agentproto.InstanceStatus {
	s := in.status
	return &agentproto.InstanceStatus{InstanceId: id, State: string(s.state), Reason: s.reason, ContainerId: s.containerID,
		SpecHash: s.hash, ObservedAt: s.at.UnixNano(), ImageDigest: in.digest, Restarts: uint32(in.restarts.Restarts()), Events: in.events}
}

// take returns the instance's report and forgets its events: they are sent once.
func (in *instance) take(id string) *agentproto.InstanceStatus {
	st := in.proto(id)
	in.events = nil
	return st
}

func newReconciler(rt Runtime, nodeID, dataDir string, resync time.Duration, clock clockwork.Clock, log *slog.Logger) *reconciler {
	r := &reconciler{rt: rt, nodeID: nodeID, dataDir: dataDir, resync: resync, clock: clock, log: log,
		wake: make(chan struct{}, 1), outboxReady: make(chan struct{}, 1),
		insts: map[string]*instance{}, outbox: map[string]bool{}}
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

func (r *reconciler) trigger() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
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
func (r *reconciler) setDesired(d *agentproto.DesiredState) bool {
	r.mu.Lock()
	if r.ordered && r.desired != nil && d.Generation < r.desired.Generation {
		r.mu.Unlock()
		r.log.Warn("ignoring an older desired state", "generation", d.Generation, "have", r.desired.Generation)
		return false
	}
	r.desired, r.ordered = d, true
	resend := false
	for _, is := range d.Instances {
		if in := r.insts[is.Id]; in != nil && in.status.state != "" && in.status.hash == is.SpecHash {
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
	for id, in := range r.insts {
		out = append(out, in.take(id))
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
			out = append(out, in.take(id))
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

// setStatus records an instance's state and queues it for the server when it changed.
func (r *reconciler) setStatus(id, hash string, state api.InstanceState, reason, containerID string) {
	r.setStatusEvent(id, hash, state, reason, containerID, "")
}

// setStatusEvent is setStatus with an event to report, if event is not empty.
func (r *reconciler) setStatusEvent(id, hash string, state api.InstanceState, reason, containerID, event string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.insts[id]
	if in == nil {
		return
	}
	if event != "" {
		// Bounded: events wait here only while the server is away.
		if len(in.events) >= maxPendingEvents {
			in.events = in.events[1:]
		}
		in.events = append(in.events, event)
		r.log.Info("instance event", "instance_id", id, "event", event)
	}
	s := observed{state: state, reason: reason, containerID: containerID, hash: hash}
	if event == "" && s == (observed{in.status.state, in.status.reason, in.status.containerID, in.status.hash, time.Time{}}) {
		return
	}
	s.at = r.clock.Now()
	in.status = s
	r.log.Info("instance state", "instance_id", id, "state", state, "reason", reason)
	r.outbox[id] = true
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

// stop ends the instance's health watch and backoff timer; r.mu is held.
func (in *instance) stop() {
	if in.watch != nil {
		in.watch()
		in.watch, in.watchedID = nil, ""
	}
	if in.retry != nil {
		in.retry.Stop()
		in.retry = nil
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
			r.ensureInstance(is.Id)
			r.setStatus(is.Id, is.SpecHash, api.InstanceFailed, fmt.Sprintf("unreadable container spec: %v", err), "")
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
		r.ensureInstance(id)
		do(func() {
			if r.converge(ctx, id, w, byInst[id]) {
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

// converge brings one instance's containers in line with its spec and
// reports whether its container is running.
func (r *reconciler) converge(ctx context.Context, id string, w wanted, cs []container.State) bool {
	r.mu.Lock()
	if in := r.insts[id]; in.restartsOf != w.spec.SpecHash {
		in.restarts, in.restartsOf = restart.Tracker{}, w.spec.SpecHash
	}
	r.mu.Unlock()
	var cur *container.State
	var stale []container.State
	for i := range cs {
		c := &cs[i]
		// The hash alone decides: the server may pin the image to a
		// digest later without changing what the container runs.
		if cur == nil && c.Labels[container.LabelSpecHash] == w.spec.SpecHash {
			cur = c
		} else {
			stale = append(stale, *c)
		}
	}
	// Stop-first removes what differs from the spec before anything else;
	// start-first keeps it serving until its replacement is ready.
	if !w.spec.StartFirst || r.replacementReady(id, cur, w) {
		for _, c := range stale {
			r.log.Info("replacing container that differs from its spec", "container_id", short(c.ID), "instance_id", id)
			if err := r.rt.Remove(ctx, r.nodeID, c.ID); err != nil {
				r.log.Error("removing container", "container_id", short(c.ID), "err", err)
			}
		}
	}
	switch {
	case cur == nil:
		event := ""
		if r.vanished(id, w) {
			event = eventRecreated
		}
		r.create(ctx, w, event)
	case !cur.Running:
		r.exited(ctx, w, cur)
	default:
		r.watchHealth(ctx, w, cur)
		return true
	}
	return false
}

// replacementReady reports whether an instance's current container may take
// over from the ones it replaces: running, and healthy if it is checked.
func (r *reconciler) replacementReady(id string, cur *container.State, w wanted) bool {
	if cur == nil || !cur.Running {
		return false
	}
	if w.container.HealthCheck == nil {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.insts[id].status
	return st.state == api.InstanceHealthy && st.containerID == cur.ID
}

func (r *reconciler) ensureInstance(id string) *instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.insts[id]
	if in == nil {
		in = &instance{status: observed{state: api.InstancePending}}
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

// vanished reports whether the instance's container of w's spec, which
// the agent created, is gone: someone removed it.
func (r *reconciler) vanished(id string, w wanted) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.insts[id].status
	return st.containerID != "" && st.hash == w.spec.SpecHash
}

// due reports whether an instance's backoff allows an attempt now, and
// otherwise schedules a pass for when it does.
func (r *reconciler) due(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.insts[id]
	wait := in.restarts.Wait(r.clock.Now())
	if wait <= 0 {
		return true
	}
	if in.retry == nil {
		in.retry = r.clock.AfterFunc(wait, r.trigger)
	} else {
		in.retry.Reset(wait)
	}
	return false
}

// failedStart records an attempt that could not start the instance: it
// has failed, and the next attempt waits its backoff.
func (r *reconciler) failedStart(id, hash string, err error, containerID string) {
	r.mu.Lock()
	r.insts[id].restarts.Failed(r.clock.Now())
	r.mu.Unlock()
	r.setStatus(id, hash, api.InstanceFailed, err.Error(), containerID)
}

// create makes and starts the instance's container; event, if not empty,
// is reported once it runs.
func (r *reconciler) create(ctx context.Context, w wanted, event string) {
	id, hash, c := w.spec.Id, w.spec.SpecHash, w.container
	if !r.due(id) {
		return
	}
	r.stopWatch(id)
	r.setStatus(id, hash, api.InstancePulling, "", "")
	digest, err := r.rt.EnsureImage(ctx, c.Image)
	if err != nil {
		r.failedStart(id, hash, err, "")
		return
	}
	r.mu.Lock()
	r.insts[id].digest = digest
	r.mu.Unlock()
	r.setStatus(id, hash, api.InstanceStarting, "", "")
	cid, err := r.rt.Create(ctx, containerConfig(r.nodeID, w))
	if err != nil {
		r.failedStart(id, hash, err, "")
		return
	}
	if err := r.rt.Start(ctx, r.nodeID, cid); err != nil {
		r.failedStart(id, hash, err, cid)
		return
	}
	r.setStatusEvent(id, hash, api.InstanceRunning, "", cid, event)
	// The next pass finds it running, starts its health watch and counts it.
	r.trigger()
}

// exited applies the restart policy to a container that stopped. An exit
// the policy restarts is no failure of the instance until it crash-loops
// (restart.Tolerance); a container that cannot be started again (removed
// from outside dockfleet as it exited: "marked for removal") is replaced by
// a new one.
func (r *reconciler) exited(ctx context.Context, w wanted, c *container.State) {
	id, hash := w.spec.Id, w.spec.SpecHash
	r.stopWatch(id)
	if c.StartedAt.IsZero() {
		// Created but never started: the start that failed said why, and
		// a failed start is the instance's failure.
		r.mu.Lock()
		st := r.insts[id].status
		r.mu.Unlock()
		if st.state != api.InstanceFailed || st.containerID != c.ID {
			r.setStatus(id, hash, api.InstanceFailed, cmp.Or(c.Error, "created but never started"), c.ID)
		}
	} else {
		reason := fmt.Sprintf("exited with code %d", c.ExitCode)
		if c.Error != "" {
			reason += ": " + c.Error
		}
		r.mu.Lock()
		d := r.insts[id].restarts.Exited(w.container.RestartPolicy, c.ExitCode, c.FinishedAt.Sub(c.StartedAt))
		streak := r.insts[id].restarts.Streak()
		r.mu.Unlock()
		switch {
		case !d.Restart:
			state := api.InstanceStopped
			if c.ExitCode != 0 {
				state = api.InstanceFailed
			}
			r.setStatus(id, hash, state, reason, c.ID)
			return
		case d.CrashLoop:
			r.setStatus(id, hash, api.InstanceFailed, fmt.Sprintf("%s; crash-looping: restarted %d times in a row, restarting with backoff up to %s",
				reason, streak, restart.MaxDelay), c.ID)
		default:
			r.setStatus(id, hash, api.InstanceStarting, reason+"; restarting", c.ID)
		}
	}
	if !r.due(id) {
		return
	}
	r.log.Info("restarting exited container", "instance_id", id, "container_id", short(c.ID))
	if err := r.rt.Start(ctx, r.nodeID, c.ID); err != nil {
		r.log.Warn("restarting container failed; replacing it", "instance_id", id, "container_id", short(c.ID), "err", err)
		if err := r.rt.Remove(ctx, r.nodeID, c.ID); err != nil {
			// Its removal is under way: its destroy event brings the pass
			// that finds it gone and creates the new one.
			r.log.Info("container still being removed; recreating it once it is gone", "instance_id", id, "container_id", short(c.ID), "err", err)
			return
		}
		r.create(ctx, w, eventReplaced)
		return
	}
	r.mu.Lock()
	r.insts[id].restarts.Restarted(r.clock.Now())
	r.mu.Unlock()
	r.setStatusEvent(id, hash, api.InstanceRunning, "", c.ID, fmt.Sprintf(eventRestarted, c.ExitCode))
	r.trigger()
}

// watchHealth makes sure a running container has its health watch; without a
// health check, running is as good as it gets.
func (r *reconciler) watchHealth(ctx context.Context, w wanted, c *container.State) {
	id, hash := w.spec.Id, w.spec.SpecHash
	hc := w.container.HealthCheck
	r.mu.Lock()
	in := r.insts[id]
	watching := in.watch != nil && in.watchedID == c.ID
	state := in.status.state
	r.mu.Unlock()
	if hc == nil {
		if state != api.InstanceRunning {
			r.setStatus(id, hash, api.InstanceRunning, "", c.ID)
		}
		return
	}
	if watching {
		return
	}
	r.stopWatch(id)
	if state != api.InstanceHealthy && state != api.InstanceUnhealthy {
		r.setStatus(id, hash, api.InstanceRunning, "", c.ID)
	}
	wctx, cancel := context.WithCancel(ctx)
	r.mu.Lock()
	in.watch, in.watchedID = cancel, c.ID
	r.mu.Unlock()
	target := health.Target{IP: c.IP, ContainerID: c.ID, NodeID: r.nodeID, Exec: r.rt}
	r.watches.Add(1) // run waits for it
	go func() {
		defer r.watches.Done()
		health.Watch(wctx, *hc, target, func(s health.Status) {
			if wctx.Err() != nil {
				return
			}
			if s.Healthy {
				r.setStatus(id, hash, api.InstanceHealthy, "", c.ID)
				r.trigger() // a start-first replacement may now take over
			} else {
				r.setStatus(id, hash, api.InstanceUnhealthy, s.Reason, c.ID)
			}
		})
	}()
}

func (r *reconciler) stopWatch(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if in := r.insts[id]; in != nil && in.watch != nil {
		in.watch()
		in.watch, in.watchedID = nil, ""
	}
}

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
