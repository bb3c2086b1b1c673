package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/rollout"
	"github.com/dockfleet/dockfleet/internal/store"
	"github.com/dockfleet/dockfleet/internal/termtext"
)

// progress steps every active rollout once, persists what each step
// decided and marks the nodes of the instances it moved. It returns the
// images nodes must pull for rollouts in their pre-pull phase.
func (f *fleet) progress(ctx context.Context, mark func(nodeID string)) (map[string][]string, error) {
	active, err := f.s.store.ActiveRollouts(ctx)
	if err != nil {
		return nil, err
	}
	if len(active) == 0 {
		f.trackPulls(nil, nil)
		return nil, nil
	}
	v := f.view
	pullReqs := map[string][]string{}
	prePulling := map[string]bool{} // the images of rollouts in pre-pull
	ready := f.ready()
	now := time.Now()
	for _, r := range active {
		d, ok := v.deps[depKey(r.Project, r.Deployment)]
		if !ok {
			continue
		}
		insts := rolloutInstances(v.deployment(r.Project, r.Deployment), v, ready)
		image := pullImage(v.revs, r)
		f.mu.Lock()
		for k := range insts {
			if p, ok := f.pulls[insts[k].NodeID][image]; ok && p.answered {
				insts[k].Pulled, insts[k].PullError = p.err == "", p.err
			}
		}
		f.mu.Unlock()
		res := rollout.Step(r, d.Spec.Spec.Update, insts, now)
		if !res.Wake.IsZero() {
			f.wakeAt(res.Wake)
		}
		if res.Rollout.Phase == api.PhasePrePull && res.Rollout.State == api.RolloutRunning {
			prePulling[image] = true
			f.requestPulls(pullReqs, res.Rollout, insts, image)
		}
		if !res.Changed {
			continue
		}
		moves, err := f.persist(ctx, res, v.revs)
		if errors.Is(err, store.ErrConflict) {
			f.trigger() // a user's action came between; step again
			continue
		}
		if err != nil {
			return nil, err
		}
		at := time.Now()
		for _, m := range moves {
			v.move(m, at)
			if in := v.insts[m.ID]; in != nil {
				mark(in.NodeID)
			}
		}
		if res.Stable != nil {
			d.StableRevision = *res.Stable
			v.deps[depKey(r.Project, r.Deployment)] = d
		}
	}
	f.trackPulls(pullReqs, prePulling)
	return pullReqs, nil
}

// trackPulls notes the pull requests of this pass, so that pulled accepts
// their answers, and forgets the requests and answers of images no
// rollout pre-pulls any more and of nodes that are gone: what f.pulls
// holds is bounded by what the server asked for, never by what nodes send.
func (f *fleet) trackPulls(reqs map[string][]string, prePulling map[string]bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for nodeID, images := range reqs {
		if f.pulls[nodeID] == nil {
			f.pulls[nodeID] = map[string]pullResult{}
		}
		for _, img := range images {
			if _, ok := f.pulls[nodeID][img]; !ok {
				f.pulls[nodeID][img] = pullResult{}
			}
		}
	}
	for nodeID, m := range f.pulls {
		for img := range m {
			if !prePulling[img] {
				delete(m, img)
			}
		}
		if _, ok := f.nodes[nodeID]; !ok || len(m) == 0 {
			delete(f.pulls, nodeID)
		}
	}
}

// pullImage is the image a rollout's nodes pre-pull: pinned when it can be.
func pullImage(revs revisionSet, r api.Rollout) string {
	ri, _ := revs.get(r.Project, r.Deployment, r.To)
	return ri.image
}

// requestPulls asks the nodes that still lack a rollout's image to pull it,
// at most PrePullParallelism of them at a time, so a large fleet does not
// hit its registry all at once.
func (f *fleet) requestPulls(reqs map[string][]string, r api.Rollout, insts []rollout.Instance, image string) {
	var nodes []string
	for _, i := range insts {
		if i.Revision == r.To || !i.Reachable || i.Pulled || i.PullError != "" ||
			slices.Contains(r.PrePulled, i.NodeID) || slices.Contains(r.PullFailed, i.ID) || slices.Contains(nodes, i.NodeID) {
			continue
		}
		nodes = append(nodes, i.NodeID)
	}
	slices.Sort(nodes)
	for _, n := range nodes[:min(len(nodes), f.s.cfg.PrePullParallelism)] {
		reqs[n] = append(reqs[n], image)
	}
}

// pullResult is a pre-pull request and, once answered, the node's answer.
type pullResult struct {
	answered bool
	err      string
}

// pulled records a node's answer to a pre-pull request. An answer to no
// request (an image the server did not ask this node for, or no longer
// pre-pulls) is dropped, and logged sparsely: a node that sends them is
// broken or hostile.
func (f *fleet) pulled(nodeID string, p *agentproto.ImagePull) {
	f.mu.Lock()
	_, ok := f.pulls[nodeID][p.Image]
	if ok {
		f.pulls[nodeID][p.Image] = pullResult{answered: true, err: p.Error}
	}
	f.mu.Unlock()
	if !ok {
		img, _ := termtext.Escape(p.Image, 64)
		f.unaskedPullLog.warn("ignoring an image pull answer: the server did not ask this node for that image",
			"node_id", nodeID, "image", img, "image_bytes", len(p.Image))
		return
	}
	f.trigger()
}

// persist writes one step's result and wakes event followers. It returns
// the instance moves it wrote.
func (f *fleet) persist(ctx context.Context, res rollout.Result, revs revisionSet) ([]store.InstanceMove, error) {
	r := res.Rollout
	moves := make([]store.InstanceMove, len(res.Moves))
	for i, m := range res.Moves {
		moves[i] = store.InstanceMove{ID: m.ID, Revision: m.Revision, SpecHash: revs.hash(r.Project, r.Deployment, m.Revision)}
	}
	events := make([]api.Event, len(res.Events))
	for i, e := range res.Events {
		events[i] = api.Event{Time: r.UpdatedAt, Project: r.Project, Deployment: r.Deployment, Rollout: r.ID, Type: e.Type, Message: e.Message}
		f.log.Info("rollout", "project", r.Project, "deployment", r.Deployment, "rollout_id", r.ID, "event", e.Type, "message", e.Message)
	}
	if _, err := f.s.store.StepRollout(ctx, r, moves, res.Stable, events); err != nil {
		return nil, err
	}
	f.s.events.notify()
	return moves, nil
}

// ready returns the IDs of the nodes that are ready now.
func (f *fleet) ready() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	ready := make(map[string]bool, len(f.nodes))
	for id, ln := range f.nodes {
		if ln.state == api.NodeReady {
			ready[id] = true
		}
	}
	return ready
}

// rolloutInstances describes a deployment's instances for rollout.Step.
func rolloutInstances(insts []*api.Instance, v *view, ready map[string]bool) []rollout.Instance {
	out := make([]rollout.Instance, 0, len(insts))
	for _, in := range insts {
		name := in.NodeID
		reachable := ready[in.NodeID]
		if reachable {
			name = v.nodes[in.NodeID].Name
		}
		ri, _ := v.revs.get(in.Project, in.Deployment, in.Revision)
		out = append(out, rollout.Instance{ID: in.ID, NodeID: in.NodeID, NodeName: name, Revision: in.Revision, State: in.State, Reason: in.Reason,
			Since: in.UpdatedAt, Reachable: reachable, Checked: ri.rev.Spec.Spec.Container.HealthCheck != nil})
	}
	return out
}

// events lets API followers wait for new events.
type eventBell struct {
	mu sync.Mutex
	ch chan struct{}
}

func newEventBell() *eventBell { return &eventBell{ch: make(chan struct{})} }

// notify wakes every waiter.
func (b *eventBell) notify() {
	b.mu.Lock()
	close(b.ch)
	b.ch = make(chan struct{})
	b.mu.Unlock()
}

// wait returns a channel closed at the next notify.
func (b *eventBell) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

// maxEventWait bounds a long poll, below common proxy timeouts.
const maxEventWait = 60 * time.Second

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := store.EventFilter{Project: r.PathValue("project"), Deployment: q.Get("deployment")}
	if a := q.Get("after"); a != "" {
		if _, err := fmt.Sscan(a, &f.After); err != nil || f.After < 0 {
			return badRequestf("after: %q is not a sequence number", a)
		}
	}
	var wait time.Duration
	if ws := q.Get("wait"); ws != "" {
		var err error
		if wait, err = time.ParseDuration(ws); err != nil || wait < 0 {
			return badRequestf("wait: %q is not a duration (e.g. 30s)", ws)
		}
		wait = min(wait, maxEventWait)
	}
	deadline := time.After(wait)
	for {
		bell := s.events.wait()
		evs, err := s.store.ListEvents(r.Context(), f)
		if err != nil {
			return err
		}
		if len(evs) > 0 || wait == 0 {
			writeList(w, evs)
			return nil
		}
		select {
		case <-bell:
		case <-deadline:
			writeList(w, evs)
			return nil
		case <-r.Context().Done():
			return nil
		}
	}
}

func (s *Server) listRevisions(w http.ResponseWriter, r *http.Request) error {
	project, name := r.PathValue("project"), r.PathValue("name")
	if _, err := s.deployment(r, project, name); err != nil {
		return err
	}
	revs, err := s.store.ListRevisions(r.Context(), project, name)
	if err != nil {
		return err
	}
	writeList(w, revs)
	return nil
}

// deployment reads a deployment, with a 404 that names it.
func (s *Server) deployment(r *http.Request, project, name string) (api.Deployment, error) {
	d, err := s.store.GetDeployment(r.Context(), project, name)
	if errors.Is(err, store.ErrNotFound) {
		return d, notFound{fmt.Sprintf("no deployment %q in project %q", name, project)}
	}
	return d, err
}

func (s *Server) getRollout(w http.ResponseWriter, r *http.Request) error {
	project, name := r.PathValue("project"), r.PathValue("name")
	ro, err := s.store.LatestRollout(r.Context(), project, name)
	if errors.Is(err, store.ErrNotFound) {
		return notFound{fmt.Sprintf("deployment %q in project %q has no rollout", name, project)}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ro)
	return nil
}

// conflict is a request that the object's state does not allow.
type conflict struct{ msg string }

func (e conflict) Error() string { return e.msg }

func (s *Server) rolloutAction(w http.ResponseWriter, r *http.Request) error {
	project, name, action := r.PathValue("project"), r.PathValue("name"), r.PathValue("action")
	ctx := r.Context()
	for attempt := 0; ; attempt++ {
		ro, err := s.store.LatestRollout(ctx, project, name)
		if errors.Is(err, store.ErrNotFound) {
			return conflict{fmt.Sprintf("deployment %q in project %q has no rollout to %s", name, project, action)}
		}
		if err != nil {
			return err
		}
		res, err := s.act(ctx, ro, action)
		if err != nil {
			return err
		}
		err = s.fleet.persistAction(ctx, res)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return err
		}
		s.fleet.trigger()
		writeJSON(w, http.StatusOK, res.Rollout)
		return nil
	}
}

// act decides what a user's action does to rollout ro. The rules are the
// rollout package's; a refusal is a conflict with the rollout's state.
func (s *Server) act(ctx context.Context, ro api.Rollout, action string) (rollout.Result, error) {
	now := time.Now().UTC()
	var (
		res rollout.Result
		err error
	)
	switch action {
	case "pause":
		res, err = rollout.Pause(ro, now)
	case "resume":
		res, err = rollout.Resume(ro, now)
	case "promote":
		res, err = rollout.Promote(ro, now)
	case "abort":
		var all []api.Instance
		if all, err = s.store.ListInstances(ctx, store.InstanceFilter{Project: ro.Project, Deployment: ro.Deployment}); err != nil {
			return res, err
		}
		insts := make([]rollout.Instance, len(all))
		for i, in := range all {
			insts[i] = rollout.Instance{ID: in.ID, Revision: in.Revision}
		}
		res, err = rollout.Abort(ro, insts, now)
	default:
		return res, notFound{fmt.Sprintf("no rollout action %q: use pause, resume, promote, abort or undo", action)}
	}
	var refused *rollout.RefusedError
	if errors.As(err, &refused) {
		return res, conflict{refused.Error()}
	}
	return res, err
}

// persistAction writes a user's action, with the spec hashes its moves
// need, and has the controller read back what it changed.
func (f *fleet) persistAction(ctx context.Context, res rollout.Result) error {
	d, err := f.s.store.GetDeployment(ctx, res.Rollout.Project, res.Rollout.Deployment)
	if err != nil {
		return err
	}
	revs, err := loadRevisions(ctx, f.s.store, []api.Deployment{d}, f.digestLog.warn)
	if err != nil {
		return err
	}
	if _, err := f.persist(ctx, res, revs); err != nil {
		return err
	}
	if len(res.Moves) > 0 || res.Stable != nil {
		f.need(reloadDeployments | reloadInstances)
	}
	return nil
}
