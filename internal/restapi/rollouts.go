package restapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/rollout"
	"github.com/dockfleet/dockfleet/internal/store"
)

// EventBell lets API followers wait for new events; the controller and
// the API ring it when they write some. On a replica of several, Relay
// rings the other replicas' bells too.
type EventBell struct {
	mu sync.Mutex
	ch chan struct{}
	// Relay, if set before the bell is first rung, tells the other
	// replicas; they Wake their own bells.
	Relay func()
}

// NewEventBell makes a bell with no waiter.
func NewEventBell() *EventBell { return &EventBell{ch: make(chan struct{})} }

// Notify wakes every waiter, here and, with Relay, on every replica.
func (b *EventBell) Notify() {
	b.Wake()
	if b.Relay != nil {
		b.Relay()
	}
}

// Wake wakes every waiter of this bell.
func (b *EventBell) Wake() {
	b.mu.Lock()
	close(b.ch)
	b.ch = make(chan struct{})
	b.mu.Unlock()
}

// wait returns a channel closed at the next Notify.
func (b *EventBell) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

// MaxEventWait bounds a long poll, below common proxy timeouts.
const MaxEventWait = 60 * time.Second

func (s *Handler) listEvents(w http.ResponseWriter, r *http.Request) error {
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
		wait = min(wait, MaxEventWait)
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

func (s *Handler) listRevisions(w http.ResponseWriter, r *http.Request) error {
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
func (s *Handler) deployment(r *http.Request, project, name string) (api.Deployment, error) {
	d, err := s.store.GetDeployment(r.Context(), project, name)
	if errors.Is(err, store.ErrNotFound) {
		return d, notFound{fmt.Sprintf("no deployment %q in project %q", name, project)}
	}
	return d, err
}

func (s *Handler) getRollout(w http.ResponseWriter, r *http.Request) error {
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

func (s *Handler) rolloutAction(w http.ResponseWriter, r *http.Request) error {
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
		err = s.ctl.PersistAction(ctx, res)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return err
		}
		s.ctl.Trigger()
		writeJSON(w, http.StatusOK, res.Rollout)
		return nil
	}
}

// act decides what a user's action does to rollout ro. The rules are the
// rollout package's; a refusal is a conflict with the rollout's state.
func (s *Handler) act(ctx context.Context, ro api.Rollout, action string) (rollout.Result, error) {
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
