// Package runtimetest is the conformance suite of agent.Runtime. The same
// tests run against the in-memory runtime (fakert) and against the real
// Docker daemon (dockerrt), so the fake the agent's unit tests trust
// cannot drift from the real thing.
//
// A Backend supplies the runtime and what the suite must do behind its back:
// crash a container, delete it by hand, create containers dockfleet does not
// own.
package runtimetest

import (
	"context"
	"crypto/rand"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distribution/reference"

	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/container"
)

// Backend is one runtime under test.
type Backend struct {
	// Runtime is the runtime under test.
	Runtime agent.Runtime
	// Image is a reference to an image built on this host, never pushed
	// nor pulled, so with no digest; its containers run until killed.
	Image string
	// MissingImage is a reference EnsureImage cannot get.
	MissingImage string
	// Labels are added to every container the suite creates, to find
	// leftovers by; nil adds none.
	Labels map[string]string
	// ExecCommand returns a command that exits with code, 0 or 1, when
	// run in running container id.
	ExecCommand func(t *testing.T, id string, code int) []string
	// Crash kills running container id as its process dying would, and
	// returns the exit code the runtime will then report.
	Crash func(t *testing.T, id string) int
	// Delete removes container id behind the runtime's back, as
	// docker rm -f on the host would.
	Delete func(t *testing.T, id string)
	// CreateUnowned creates a container of Image with exactly labels,
	// bypassing the runtime's checks, and removes it when t ends.
	CreateUnowned func(t *testing.T, name string, labels map[string]string) string
	// Exists reports whether container id exists, whoever owns it.
	Exists func(t *testing.T, id string) bool
	// Push puts Image in a registry the runtime pulls from, under a
	// reference of a repository the runtime has no image of, and returns
	// that reference and the digest it has there, pinned:
	// "repository@sha256:…" in Docker's familiar form. It undoes what it
	// and the pulls of the returned references leave behind when t ends.
	Push func(t *testing.T) (ref, pinned string)
}

// Run runs the suite. Its subtests run in parallel, each with a node ID
// and container names of its own, so several runs can share one daemon.
func Run(t *testing.T, b Backend) {
	s := &suite{b: b, run: strings.ToLower(rand.Text()[:8])}
	tests := []struct {
		name string
		fn   func(t *testing.T, nodeID string)
	}{
		{"Info", s.testInfo},
		{"EnsureImage", s.testEnsureImage},
		{"ImageDigest", s.testImageDigest},
		{"Lifecycle", s.testLifecycle},
		{"CreateErrors", s.testCreateErrors},
		{"Ownership", s.testOwnership},
		{"EmptyNodeID", s.testEmptyNodeID},
		{"Exec", s.testExec},
		{"Events", s.testEvents},
		{"EventsOtherNode", s.testEventsOtherNode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, "node-"+s.run+"-"+strings.ToLower(tt.name))
		})
	}
}

type suite struct {
	b   Backend
	run string // keeps names unique among runs sharing a daemon
}

// waitTimeout bounds every wait for the runtime to catch up.
const waitTimeout = 15 * time.Second

func (s *suite) name(t *testing.T, suffix string) string {
	return "dftest-" + s.run + "-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")) + "-" + suffix
}

// config returns a Config of the backend's image owned by nodeID.
func (s *suite) config(t *testing.T, nodeID, suffix string) container.Config {
	labels := maps.Clone(s.b.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[container.LabelManaged] = "true"
	labels[container.LabelNode] = nodeID
	labels[container.LabelInstance] = "inst-" + suffix
	return container.Config{
		Name:   s.name(t, suffix),
		Image:  s.b.Image,
		Env:    map[string]string{"DOCKFLEET_TEST": suffix},
		Labels: labels,
	}
}

// create pulls the image, creates cfg and removes the container when t
// ends, through the runtime when nodeID still owns it.
func (s *suite) create(t *testing.T, cfg container.Config) string {
	t.Helper()
	rt := s.b.Runtime
	if _, err := rt.EnsureImage(t.Context(), cfg.Image); err != nil {
		t.Fatalf("EnsureImage(%s): %v", cfg.Image, err)
	}
	id, err := rt.Create(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Create(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := rt.Remove(ctx, cfg.Labels[container.LabelNode], id); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return id
}

func (s *suite) start(t *testing.T, nodeID, id string) {
	t.Helper()
	if err := s.b.Runtime.Start(t.Context(), nodeID, id); err != nil {
		t.Fatalf("Start(%s): %v", id, err)
	}
}

// get returns nodeID's container id as List shows it; ok is false when
// List does not show it.
func (s *suite) get(t *testing.T, nodeID, id string) (st container.State, ok bool) {
	t.Helper()
	states, err := s.b.Runtime.List(t.Context(), nodeID)
	if err != nil {
		t.Fatalf("List(%s): %v", nodeID, err)
	}
	for _, st := range states {
		if st.ID == id {
			return st, true
		}
	}
	return container.State{}, false
}

// waitState waits until List shows id in a state cond accepts (ok false:
// not listed) and returns it.
func (s *suite) waitState(t *testing.T, nodeID, id, what string, cond func(st container.State, ok bool) bool) container.State {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		st, ok := s.get(t, nodeID, id)
		if cond(st, ok) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: got state %+v (listed %t); want %s", id, st, ok, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *suite) testInfo(t *testing.T, _ string) {
	info, err := s.b.Runtime.Info(t.Context())
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.RuntimeVersion == "" || info.OS == "" || info.Arch == "" || info.CPUs < 1 || info.MemoryBytes < 1 {
		t.Errorf("Info: got %+v; want every field set", info)
	}
}

func (s *suite) testEnsureImage(t *testing.T, _ string) {
	rt := s.b.Runtime
	for range 2 { // present after the first call: the second must not fail
		if _, err := rt.EnsureImage(t.Context(), s.b.Image); err != nil {
			t.Fatalf("EnsureImage(%s): %v", s.b.Image, err)
		}
	}
	pinned, err := rt.EnsureImage(t.Context(), s.b.MissingImage)
	if pinned != "" {
		t.Errorf("EnsureImage(%s): got digest %q with the error; want none", s.b.MissingImage, pinned)
	}
	if err == nil {
		t.Fatalf("EnsureImage(%s): got nil error; want one", s.b.MissingImage)
	}
	if !strings.Contains(err.Error(), s.b.MissingImage) {
		t.Errorf("EnsureImage(%s): got %q; want the reference in it", s.b.MissingImage, err)
	}
}

// testImageDigest checks what EnsureImage reports: no digest for an image
// built here, and for a pushed one the registry's digest, the same whether
// pulled by tag or by digest. That digest is what other nodes are told to
// pull, so a reference pinned to it must work as well as the tag.
func (s *suite) testImageDigest(t *testing.T, nodeID string) {
	rt := s.b.Runtime
	for range 2 {
		got, err := rt.EnsureImage(t.Context(), s.b.Image)
		if err != nil || got != "" {
			t.Fatalf("EnsureImage(%s), built here: got %q, %v; want no digest, nil", s.b.Image, got, err)
		}
	}

	ref, pinned := s.b.Push(t)
	named, err := reference.ParseNormalizedNamed(pinned)
	if _, ok := named.(reference.Canonical); err != nil || !ok || reference.FamiliarString(named) != pinned {
		t.Fatalf("Push: got pinned reference %q (%v); want repository@digest in Docker's familiar form", pinned, err)
	}
	steps := []struct {
		what, ref string
	}{
		{"by digest, missing: pulled by the digest", pinned},
		{"by tag, missing", ref},
		{"by digest, present", pinned},
		{"by tag, present", ref},
	}
	for _, st := range steps {
		got, err := rt.EnsureImage(t.Context(), st.ref)
		if err != nil {
			t.Fatalf("EnsureImage(%s) %s: %v", st.ref, st.what, err)
		}
		if got != pinned {
			t.Errorf("EnsureImage(%s) %s: got %q; want %q", st.ref, st.what, got, pinned)
		}
	}

	cfg := s.config(t, nodeID, "pinned")
	cfg.Image = pinned
	id := s.create(t, cfg)
	if st, ok := s.get(t, nodeID, id); !ok || st.Image != pinned {
		t.Errorf("created from %s: got %+v (listed %t); want its image %s", pinned, st, ok, pinned)
	}
}

func (s *suite) testLifecycle(t *testing.T, nodeID string) {
	rt := s.b.Runtime
	cfg := s.config(t, nodeID, "a")
	id := s.create(t, cfg)

	st, ok := s.get(t, nodeID, id)
	if !ok {
		t.Fatalf("List(%s): created container %s missing", nodeID, id)
	}
	if st.Name != cfg.Name || st.Image != cfg.Image || st.Running || st.IP != "" || !st.StartedAt.IsZero() {
		t.Errorf("created: got %+v; want name %s, image %s, not running, no IP, never started", st, cfg.Name, cfg.Image)
	}
	for k, v := range cfg.Labels {
		if st.Labels[k] != v {
			t.Errorf("created: label %s: got %q; want %q", k, st.Labels[k], v)
		}
	}

	s.start(t, nodeID, id)
	st = s.waitState(t, nodeID, id, "running", func(st container.State, ok bool) bool { return ok && st.Running })
	if st.IP == "" || st.StartedAt.IsZero() || st.ExitCode != 0 {
		t.Errorf("started: got %+v; want an IP, a start time, exit code 0", st)
	}
	if err := rt.Start(t.Context(), nodeID, id); err != nil {
		t.Errorf("Start of a running container: got %v; want nil", err)
	}

	code := s.b.Crash(t, id)
	st = s.waitState(t, nodeID, id, "exited", func(st container.State, ok bool) bool { return ok && !st.Running })
	if st.ExitCode != code || st.FinishedAt.IsZero() || st.IP != "" {
		t.Errorf("crashed: got %+v; want exit code %d, a finish time, no IP", st, code)
	}

	s.start(t, nodeID, id)
	st = s.waitState(t, nodeID, id, "running again", func(st container.State, ok bool) bool { return ok && st.Running })
	if st.ExitCode != 0 {
		t.Errorf("restarted: exit code: got %d; want 0", st.ExitCode)
	}

	if err := rt.Remove(t.Context(), nodeID, id); err != nil {
		t.Fatalf("Remove(%s): %v", id, err)
	}
	if _, ok := s.get(t, nodeID, id); ok {
		t.Errorf("List after Remove: got container %s; want it gone", id)
	}
	if s.b.Exists(t, id) {
		t.Errorf("after Remove: container %s still exists", id)
	}
	if err := rt.Remove(t.Context(), nodeID, id); err != nil {
		t.Errorf("Remove of a removed container: got %v; want nil", err)
	}
	if err := rt.Start(t.Context(), nodeID, id); err == nil {
		t.Errorf("Start of a removed container: got nil error; want one")
	}
}

func (s *suite) testCreateErrors(t *testing.T, nodeID string) {
	rt := s.b.Runtime
	cfg := s.config(t, nodeID, "a")
	s.create(t, cfg)

	tests := []struct {
		name string
		cfg  func() container.Config
	}{
		{"name in use", func() container.Config { return cfg }},
		{"no node label", func() container.Config {
			c := s.config(t, nodeID, "nolabel")
			delete(c.Labels, container.LabelNode)
			return c
		}},
		{"image not present", func() container.Config {
			c := s.config(t, nodeID, "noimage")
			c.Image = s.b.MissingImage
			return c
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg()
			id, err := rt.Create(t.Context(), c)
			if err == nil {
				// Remove it whoever owns it, so no container is left behind.
				if s.b.Exists(t, id) {
					s.b.Delete(t, id)
				}
				t.Fatalf("Create(%s): got container %s; want an error", c.Name, id)
			}
			if !strings.Contains(err.Error(), c.Name) {
				t.Errorf("Create(%s): got %q; want the name in the error", c.Name, err)
			}
		})
	}
	if states, err := rt.List(t.Context(), nodeID); err != nil || len(states) != 1 {
		t.Errorf("List after failed creates: got %d containers, %v; want 1, nil", len(states), err)
	}
}

func (s *suite) testOwnership(t *testing.T, nodeID string) {
	rt := s.b.Runtime
	otherNode := nodeID + "-other"
	// Owned by another node, created through the runtime as that node's agent would.
	other := s.create(t, s.config(t, otherNode, "other"))
	// Not dockfleet's at all: only the test label, and one that looks like ours but is not the node label.
	unowned := s.b.CreateUnowned(t, s.name(t, "unowned"), merge(s.b.Labels, map[string]string{container.LabelInstance: "inst-x"}))
	mine := s.create(t, s.config(t, nodeID, "mine"))

	states, err := rt.List(t.Context(), nodeID)
	if err != nil {
		t.Fatalf("List(%s): %v", nodeID, err)
	}
	if len(states) != 1 || states[0].ID != mine {
		t.Errorf("List(%s): got %v; want only %s", nodeID, ids(states), mine)
	}

	for _, id := range []string{other, unowned} {
		if err := rt.Start(t.Context(), nodeID, id); err == nil {
			t.Errorf("Start(%s, foreign %s): got nil error; want one", nodeID, id)
		}
		if _, err := rt.Exec(t.Context(), nodeID, id, []string{"true"}); err == nil {
			t.Errorf("Exec(%s, foreign %s): got nil error; want one", nodeID, id)
		}
		err := rt.Remove(t.Context(), nodeID, id)
		if err == nil {
			t.Errorf("Remove(%s, foreign %s): got nil error; want one", nodeID, id)
		} else if !strings.Contains(err.Error(), id) {
			t.Errorf("Remove(%s, foreign %s): got %q; want the container's ID in it", nodeID, id, err)
		}
		if !s.b.Exists(t, id) {
			t.Errorf("foreign container %s: removed; want it untouched", id)
		}
	}
	if st, ok := s.get(t, otherNode, other); !ok || st.Running {
		t.Errorf("List(%s): got %+v (listed %t); want its container, not started", otherNode, st, ok)
	}
}

func (s *suite) testEmptyNodeID(t *testing.T, _ string) {
	rt := s.b.Runtime
	// An unlabelled container's node label reads as "": it must not look owned by "".
	unowned := s.b.CreateUnowned(t, s.name(t, "unowned"), s.b.Labels)
	if _, err := rt.List(t.Context(), ""); err == nil {
		t.Errorf(`List(""): got nil error; want one`)
	}
	if err := rt.Remove(t.Context(), "", unowned); err == nil {
		t.Errorf(`Remove("", %s): got nil error; want one`, unowned)
	}
	if !s.b.Exists(t, unowned) {
		t.Errorf("unlabelled container %s: removed; want it untouched", unowned)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if _, err := rt.Events(ctx, ""); err == nil {
		t.Errorf(`Events(""): got nil error; want one`)
	}
}

func (s *suite) testExec(t *testing.T, nodeID string) {
	rt := s.b.Runtime
	id := s.create(t, s.config(t, nodeID, "a"))
	if _, err := rt.Exec(t.Context(), nodeID, id, s.b.ExecCommand(t, id, 0)); err == nil {
		t.Errorf("Exec in a container never started: got nil error; want one")
	}
	s.start(t, nodeID, id)
	s.waitState(t, nodeID, id, "running", func(st container.State, ok bool) bool { return ok && st.Running })
	for _, want := range []int{0, 1} {
		got, err := rt.Exec(t.Context(), nodeID, id, s.b.ExecCommand(t, id, want))
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		if got != want {
			t.Errorf("Exec exit code: got %d; want %d", got, want)
		}
	}
}

func (s *suite) testEvents(t *testing.T, nodeID string) {
	rt := s.b.Runtime
	if _, err := rt.EnsureImage(t.Context(), s.b.Image); err != nil {
		t.Fatalf("EnsureImage: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	events, err := rt.Events(ctx, nodeID)
	if err != nil {
		t.Fatalf("Events(%s): %v", nodeID, err)
	}

	// Each step makes exactly one event the runtime passes on, and the
	// test waits for it before the next, so a late one cannot be mistaken
	// for the next step's.
	id := s.create(t, s.config(t, nodeID, "a"))
	waitEvent(t, events, "create")
	s.start(t, nodeID, id)
	waitEvent(t, events, "start")
	s.b.Crash(t, id)
	waitEvent(t, events, "die")
	s.waitState(t, nodeID, id, "exited", func(st container.State, ok bool) bool { return ok && !st.Running })
	s.b.Delete(t, id)
	waitEvent(t, events, "destroy")
	s.waitState(t, nodeID, id, "gone", func(_ container.State, ok bool) bool { return !ok })

	cancel()
	deadline := time.After(waitTimeout)
	for {
		select {
		case _, open := <-events:
			if !open {
				return
			}
		case <-deadline:
			t.Fatal("Events channel: still open after its context ended")
		}
	}
}

func (s *suite) testEventsOtherNode(t *testing.T, nodeID string) {
	rt := s.b.Runtime
	if _, err := rt.EnsureImage(t.Context(), s.b.Image); err != nil {
		t.Fatalf("EnsureImage: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	events, err := rt.Events(ctx, nodeID)
	if err != nil {
		t.Fatalf("Events(%s): %v", nodeID, err)
	}
	other := s.create(t, s.config(t, nodeID+"-other", "other"))
	s.start(t, nodeID+"-other", other)
	// A container of this node after the other's: once its event is in, the
	// other's would have been too.
	mine := s.create(t, s.config(t, nodeID, "mine"))
	waitEvent(t, events, "create of this node's container")
	if err := rt.Remove(t.Context(), nodeID, mine); err != nil {
		t.Fatalf("Remove(%s): %v", mine, err)
	}
	waitEvent(t, events, "destroy of this node's container")
	select {
	case <-events:
		t.Errorf("Events(%s): got an event; want none for another node's container", nodeID)
	case <-time.After(300 * time.Millisecond):
	}
}

func waitEvent(t *testing.T, events <-chan struct{}, what string) {
	t.Helper()
	select {
	case _, open := <-events:
		if !open {
			t.Fatalf("Events channel closed; want the %s event", what)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("no event after %s", what)
	}
}

func merge(a, b map[string]string) map[string]string {
	m := maps.Clone(a)
	if m == nil {
		m = map[string]string{}
	}
	maps.Copy(m, b)
	return m
}

func ids(states []container.State) []string {
	out := make([]string, 0, len(states))
	for _, st := range states {
		out = append(out, st.ID)
	}
	return slices.Sorted(slices.Values(out))
}
