// Package fakert is an in-memory agent.Runtime: containers "run" as soon as
// they start, and nothing executes. Unit tests of the agent use it, and so do
// simulated agents, thousands to a process: a container is a map entry, with
// no goroutine behind it.
//
// Its registry has every image, each tag with a digest of its own that is
// the same in every Runtime, so simulated nodes agree on what a tag points
// to (SetDigest moves a tag). Images are keyed by their normalized
// reference, as Docker does: "hello" is "docker.io/library/hello:latest".
//
// Knobs make the failures the agent must handle: an image the registry
// refuses (FailPull), an image built locally that has no digest (AddImage),
// an exec health check's exit code (SetExecExitCode), a crash (Kill) and a
// container removed by hand (Delete). The runtime
// conformance suite (internal/runtimetest) runs against fakert and against
// the real daemon through dockerrt, so the two behave alike; ownership is
// enforced here as in dockerrt.
//
// Health follows a policy for simulated agents (SetHealth, HealthyAfter,
// Unhealthy): it decides what an exec exits with, by the container's
// configuration and how long it has run, so that exec health checks pass
// after a delay, or never. That time is the Runtime's clock's (SetClock),
// which a test can move. Only exec checks can be simulated: a container's address
// (127.88.x.y) has nothing listening on it, so HTTP and TCP checks of a
// simulated container fail, and simulated deployments use exec health checks
// or none.
//
// A simulated agent owns a Runtime of its own, as a host owns its Docker:
// List and the lock are then per node, where one Runtime shared by thousands
// of nodes would scan every node's containers, under one lock, on each
// node's every pass. A Runtime is a few small maps, so thousands of them
// cost little.
package fakert

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/dockfleet/dockfleet/internal/container"
)

// Errors fakert returns; its callers see them wrapped with what was attempted.
var (
	ErrNotFound = errors.New("fakert: no such container")
	ErrNotOwned = errors.New("fakert: container not owned by this node")
	ErrNoNode   = errors.New("fakert: empty node ID")
)

// Runtime is an in-memory container runtime. The zero value is not usable;
// call New. It is safe for concurrent use.
type Runtime struct {
	mu         sync.Mutex
	info       container.HostInfo
	images     map[string]string         // normalized ref → its repo digest, "" for a local build
	digests    map[string]string         // normalized tag ref → the registry's digest, when SetDigest moved it
	pullErrors map[string]string         // normalized ref → the registry's message
	pulls      map[string]int            // by normalized ref
	containers map[string]*fakeContainer // by ID
	names      map[string]string         // name → ID
	execCodes  map[string]int            // container ID → exit code of every exec
	health     HealthFunc                // exit code of other execs; nil: 0
	clock      clockwork.Clock           // for start and finish times, never nil
	subs       map[string]map[*subscriber]struct{}
	seq        uint64
}

type fakeContainer struct {
	seq   uint64 // gives the container its address
	cfg   container.Config
	state container.State
}

type subscriber struct {
	ch chan struct{}
}

// New returns an empty runtime on a host of 4 CPUs and 8 GiB: a registry
// that has every image (until FailPull says otherwise), no local images,
// no containers.
func New() *Runtime {
	return &Runtime{
		info: container.HostInfo{
			RuntimeVersion: "fakert",
			OS:             runtime.GOOS,
			Arch:           runtime.GOARCH,
			CPUs:           4,
			MemoryBytes:    8 << 30,
		},
		images:     map[string]string{},
		digests:    map[string]string{},
		pullErrors: map[string]string{},
		pulls:      map[string]int{},
		containers: map[string]*fakeContainer{},
		names:      map[string]string{},
		execCodes:  map[string]int{},
		subs:       map[string]map[*subscriber]struct{}{},
		clock:      clockwork.NewRealClock(),
	}
}

// SetClock makes c the clock of the containers' start and finish times,
// and so of how long a container has run for the health policy; nil is the
// real clock, the default. Tests move a fake one.
func (r *Runtime) SetClock(c clockwork.Clock) {
	if c == nil {
		c = clockwork.NewRealClock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clock = c
}

// SetInfo sets what Info returns.
func (r *Runtime) SetInfo(info container.HostInfo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.info = info
}

// AddImage makes ref present locally as if built on this host and never
// pushed or pulled: EnsureImage finds it and reports no digest for it.
func (r *Runtime) AddImage(ref string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.images[normalize(ref)] = ""
}

// SetDigest makes the registry's tag ref point to dgst ("sha256:…"), as a
// push to it would: later pulls of ref get dgst. An image pulled before
// keeps the digest it was pulled with. An empty dgst restores the tag's
// default digest, which is derived from ref alone, the same in every
// Runtime.
func (r *Runtime) SetDigest(ref, dgst string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if dgst == "" {
		delete(r.digests, normalize(ref))
		return
	}
	r.digests[normalize(ref)] = dgst
}

// FailPull makes pulls of ref fail with the registry's message msg; an
// empty msg makes them succeed again. An image already present is not
// pulled, so it is unaffected.
func (r *Runtime) FailPull(ref, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if msg == "" {
		delete(r.pullErrors, normalize(ref))
		return
	}
	r.pullErrors[normalize(ref)] = msg
}

// Pulls returns how many times EnsureImage pulled ref, failed pulls included.
func (r *Runtime) Pulls(ref string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pulls[normalize(ref)]
}

// SetExecExitCode makes every later Exec in container id exit with code,
// whatever the health policy says.
func (r *Runtime) SetExecExitCode(id string, code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.execCodes[id] = code
}

// HealthFunc is a health policy: the exit code of an exec in a running
// container created with cfg that has run for ran since its (last) start, by
// the Runtime's clock. It is called without the Runtime's lock held, from
// the goroutines that call Exec, and must not modify cfg.
type HealthFunc func(cfg container.Config, ran time.Duration) (exitCode int)

// SetHealth makes f decide the exit code of every later Exec in a container
// that SetExecExitCode set no code for. A nil f, the default, makes them
// exit 0: every exec health check passes at once.
func (r *Runtime) SetHealth(f HealthFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.health = f
}

// HealthyAfter is a health policy under which an exec fails (exits 1) until
// the container has run for d, and passes (exits 0) from then on: a
// service that takes d to start. A restart starts the wait again. With d
// zero or less every exec passes.
func HealthyAfter(d time.Duration) HealthFunc {
	return func(_ container.Config, ran time.Duration) int {
		if ran < d {
			return 1
		}
		return 0
	}
}

// Unhealthy is a health policy under which every exec fails (exits 1): a
// service that never becomes healthy.
func Unhealthy(container.Config, time.Duration) int { return 1 }

// Config returns the configuration container id was created with.
func (r *Runtime) Config(id string) (container.Config, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[id]
	if !ok {
		return container.Config{}, false
	}
	return cloneConfig(c.cfg), true
}

// Kill stops running container id as if its process had died with
// exitCode, whoever owns it.
func (r *Runtime) Kill(id string, exitCode int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[id]
	if !ok {
		return fmt.Errorf("killing container %s: %w", id, ErrNotFound)
	}
	if !c.state.Running {
		return fmt.Errorf("killing container %s: container is not running", id)
	}
	r.stop(c, exitCode)
	return nil
}

// Delete removes container id, whoever owns it, as someone running
// docker rm -f on the host would.
func (r *Runtime) Delete(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[id]
	if !ok {
		return fmt.Errorf("deleting container %s: %w", id, ErrNotFound)
	}
	r.remove(c)
	return nil
}

// CreateUnowned creates a container as Create does but without requiring
// the node label: tests use it for containers dockfleet does not manage.
func (r *Runtime) CreateUnowned(cfg container.Config) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.create(cfg)
}

// Info implements agent.Runtime.
func (r *Runtime) Info(ctx context.Context) (container.HostInfo, error) {
	if err := ctx.Err(); err != nil {
		return container.HostInfo{}, fmt.Errorf("getting host info: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.info, nil
}

// List implements agent.Runtime; containers are sorted by name.
func (r *Runtime) List(ctx context.Context, nodeID string) ([]container.State, error) {
	if err := check(ctx, nodeID); err != nil {
		return nil, fmt.Errorf("listing containers of node %s: %w", nodeID, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var states []container.State
	for _, c := range r.containers {
		if owns(nodeID, c.state.Labels) {
			st := c.state
			st.Labels = maps.Clone(st.Labels)
			states = append(states, st)
		}
	}
	slices.SortFunc(states, func(a, b container.State) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return states, nil
}

// EnsureImage implements agent.Runtime: it pulls ref from the fake
// registry unless present, and returns the digest ref's image was pulled
// with, "" for one AddImage added. A ref with a digest is pulled by it,
// and a pulled tag is then present by its digest too, as in Docker.
func (r *Runtime) EnsureImage(ctx context.Context, ref string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("pulling image %s: %w", ref, err)
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("pulling image %s: %w", ref, err)
	}
	k := key(named)
	r.mu.Lock()
	defer r.mu.Unlock()
	if pinned, ok := r.images[k]; ok {
		return pinned, nil
	}
	r.pulls[k]++
	if msg, ok := r.pullErrors[k]; ok {
		return "", fmt.Errorf("pulling image %s: %s", ref, msg)
	}
	repo := reference.TrimNamed(named)
	dgst := digest.Digest(r.digests[k])
	if d, ok := named.(reference.Digested); ok {
		dgst = d.Digest()
	} else if dgst == "" {
		dgst = digest.Digest(fmt.Sprintf("%s:%x", digest.SHA256, sha256.Sum256([]byte(k))))
	}
	c, err := reference.WithDigest(repo, dgst)
	if err != nil {
		return "", fmt.Errorf("pulling image %s: digest %s: %w", ref, dgst, err)
	}
	pinned := reference.FamiliarString(c)
	r.images[k] = pinned
	r.images[c.String()] = pinned
	return pinned, nil
}

// Create implements agent.Runtime. Like dockerrt it refuses a cfg without
// the node label, and a name in use.
func (r *Runtime) Create(ctx context.Context, cfg container.Config) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("creating container %s: %w", cfg.Name, err)
	}
	if cfg.Labels[container.LabelNode] == "" {
		return "", fmt.Errorf("creating container %s: no %s label", cfg.Name, container.LabelNode)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.create(cfg)
}

func (r *Runtime) create(cfg container.Config) (string, error) {
	if _, ok := r.images[normalize(cfg.Image)]; !ok {
		return "", fmt.Errorf("creating container %s: no such image: %s", cfg.Name, cfg.Image)
	}
	r.seq++
	id := fmt.Sprintf("%064x", r.seq)
	name := cfg.Name
	if name == "" {
		name = "fakert_" + id[len(id)-12:]
	}
	if _, taken := r.names[name]; taken {
		return "", fmt.Errorf("creating container %s: name already in use", name)
	}
	cfg = cloneConfig(cfg)
	cfg.Name = name
	c := &fakeContainer{
		seq: r.seq,
		cfg: cfg,
		state: container.State{
			ID:     id,
			Name:   name,
			Image:  cfg.Image,
			Labels: cfg.Labels,
		},
	}
	r.containers[id] = c
	r.names[name] = id
	r.notify(c)
	return id, nil
}

// Start implements agent.Runtime.
func (r *Runtime) Start(ctx context.Context, nodeID, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.owned(ctx, nodeID, id)
	if err != nil {
		return fmt.Errorf("starting container %s: %w", id, err)
	}
	if c.state.Running {
		return nil
	}
	c.state.Running = true
	c.state.ExitCode = 0
	c.state.Error = ""
	c.state.StartedAt = r.clock.Now()
	c.state.IP = ipOf(c.seq)
	r.notify(c)
	return nil
}

// Remove implements agent.Runtime. Removing a container that no longer
// exists is not an error.
func (r *Runtime) Remove(ctx context.Context, nodeID, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.owned(ctx, nodeID, id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing container %s: %w", id, err)
	}
	r.remove(c)
	return nil
}

// Exec implements agent.Runtime: nothing runs, and the exit code is the one
// SetExecExitCode set for the container, else the health policy's
// (SetHealth), else 0.
func (r *Runtime) Exec(ctx context.Context, nodeID, id string, cmd []string) (int, error) {
	r.mu.Lock()
	c, err := r.owned(ctx, nodeID, id)
	if err != nil {
		r.mu.Unlock()
		return 0, fmt.Errorf("running %q in container %s: %w", cmd, id, err)
	}
	if !c.state.Running {
		r.mu.Unlock()
		return 0, fmt.Errorf("running %q in container %s: container is not running", cmd, id)
	}
	code, set := r.execCodes[id]
	health, cfg, ran := r.health, c.cfg, r.clock.Since(c.state.StartedAt)
	r.mu.Unlock()
	if set || health == nil {
		return code, nil
	}
	// cfg is never modified after Create, so the policy may read it unlocked.
	return health(cfg, ran), nil
}

// Events implements agent.Runtime. The channel is closed when ctx ends.
func (r *Runtime) Events(ctx context.Context, nodeID string) (<-chan struct{}, error) {
	if err := check(ctx, nodeID); err != nil {
		return nil, fmt.Errorf("subscribing to events of node %s: %w", nodeID, err)
	}
	s := &subscriber{ch: make(chan struct{}, 1)}
	r.mu.Lock()
	if r.subs[nodeID] == nil {
		r.subs[nodeID] = map[*subscriber]struct{}{}
	}
	r.subs[nodeID][s] = struct{}{}
	r.mu.Unlock()
	// AfterFunc rather than a goroutine per subscription: thousands of
	// simulated agents subscribe at once.
	context.AfterFunc(ctx, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.subs[nodeID], s)
		if len(r.subs[nodeID]) == 0 {
			delete(r.subs, nodeID)
		}
		close(s.ch) // under mu, so notify never sends on it closed
	})
	return s.ch, nil
}

// owned returns container id if nodeID owns it. r.mu must be held.
func (r *Runtime) owned(ctx context.Context, nodeID, id string) (*fakeContainer, error) {
	if err := check(ctx, nodeID); err != nil {
		return nil, err
	}
	c, ok := r.containers[id]
	if !ok {
		return nil, ErrNotFound
	}
	if !owns(nodeID, c.state.Labels) {
		return nil, fmt.Errorf("%w: owner is %q, not %s", ErrNotOwned, c.state.Labels[container.LabelNode], nodeID)
	}
	return c, nil
}

// stop ends c's process. r.mu must be held.
func (r *Runtime) stop(c *fakeContainer, exitCode int) {
	c.state.Running = false
	c.state.ExitCode = exitCode
	c.state.FinishedAt = r.clock.Now()
	c.state.IP = ""
	r.notify(c)
}

// remove kills and deletes c. r.mu must be held.
func (r *Runtime) remove(c *fakeContainer) {
	if c.state.Running {
		r.stop(c, 137) // what SIGKILL gives in Docker
	}
	delete(r.containers, c.state.ID)
	delete(r.names, c.state.Name)
	delete(r.execCodes, c.state.ID)
	r.notify(c)
}

// notify wakes the subscribers of c's node without blocking: one pending
// wake-up is enough, the agent lists everything when it wakes. r.mu must
// be held.
func (r *Runtime) notify(c *fakeContainer) {
	for s := range r.subs[c.state.Labels[container.LabelNode]] {
		select {
		case s.ch <- struct{}{}:
		default:
		}
	}
}

// ipOf gives container n a loopback address, 127.88.0.1 and up: a health
// probe of a simulated container then never leaves the host.
func ipOf(n uint64) string {
	n = n%(1<<16-2) + 1 // skip .0.0 and .255.255
	return fmt.Sprintf("127.88.%d.%d", n>>8, n&0xff)
}

// normalize returns the key of ref's image: its fully qualified form
// ("docker.io/library/hello:latest"), tag and digest kept, or ref itself
// when it is not a valid reference, so that the knobs accept anything.
func normalize(ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ref
	}
	return key(named)
}

// key is the key of named's image: a reference with a digest is found by
// repository and digest alone, as Docker ignores a tag beside a digest.
func key(named reference.Named) string {
	if c, ok := named.(reference.Canonical); ok {
		if d, err := reference.WithDigest(reference.TrimNamed(named), c.Digest()); err == nil {
			return d.String()
		}
	}
	return reference.TagNameOnly(named).String()
}

func check(ctx context.Context, nodeID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if nodeID == "" {
		return ErrNoNode
	}
	return nil
}

func owns(nodeID string, labels map[string]string) bool {
	return nodeID != "" && labels[container.LabelNode] == nodeID
}

func cloneConfig(cfg container.Config) container.Config {
	cfg.Command = slices.Clone(cfg.Command)
	cfg.Args = slices.Clone(cfg.Args)
	cfg.Env = maps.Clone(cfg.Env)
	cfg.Labels = maps.Clone(cfg.Labels)
	cfg.Ports = slices.Clone(cfg.Ports)
	cfg.Mounts = slices.Clone(cfg.Mounts)
	return cfg
}
