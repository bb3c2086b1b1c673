package restapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/controller"
	"github.com/dockfleet/dockfleet/internal/spec"
)

// Bounds of what the server sends an agent. The server refuses at apply
// what would not fit in a node's desired state (checkDesiredSize), whose
// bound is controller.MaxDesiredState.
const (
	// MaxContainerSpec bounds one instance's container spec (its JSON).
	MaxContainerSpec = 1 << 20
	// instanceOverhead is what an instance adds to a desired state besides
	// its container spec: IDs, names, hash, framing; generously.
	instanceOverhead = 512
)

// Applies parse a spec of up to MaxSpecFile in memory; a spec
// made of tiny list items costs the server a hundred times its size while
// it is parsed. maxApplies bounds how many run at once; one more waits up
// to applyWait for its turn, then is refused with 503.
const maxApplies = 2

// applyWait is a variable so that tests can shorten it.
var applyWait = 30 * time.Second

// busy is a refusal for now: the server has no room for the request; 503.
type busy struct{ msg string }

func (e busy) Error() string { return e.msg }

// parseSpec reads and parses the spec file of apply request r in one of
// the maxApplies slots: that is what costs memory; storing the result and
// resolving its images, which may wait on a registry, need no slot.
func (s *Handler) parseSpec(r *http.Request, filename string) ([]spec.Deployment, error) {
	if err := s.applySlot(r); err != nil {
		return nil, err
	}
	defer func() { <-s.applies }()
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxSpecFile+1))
	if err != nil {
		return nil, badRequestf("reading spec: %v", err)
	}
	if len(body) > MaxSpecFile {
		return nil, badRequestf("%s: spec is larger than %d bytes", filename, MaxSpecFile)
	}
	return spec.ParseIn(filename, body, r.URL.Query().Get("project"))
}

// applySlot waits for one of the maxApplies slots; the caller frees it.
func (s *Handler) applySlot(r *http.Request) error {
	t := time.NewTimer(applyWait)
	defer t.Stop()
	select {
	case s.applies <- struct{}{}:
		return nil
	case <-t.C:
		s.log.Warn("refusing an apply: others held every apply slot for too long", "max_applies", maxApplies, "waited", applyWait)
		return busy{fmt.Sprintf("the server is busy: %d applies ran for longer than %s while this one waited; retry later", maxApplies, applyWait)}
	case <-r.Context().Done():
		return r.Context().Err()
	}
}

// checkDesiredSize refuses deployment d when its container spec, or the
// desired state it would give a node it targets now, exceeds what the
// server sends an agent. A node's desired state is estimated from the
// specs of every deployment that targets it, their instances spread
// evenly over their ready targets, as the rollouts under way will leave it.
func (s *Handler) checkDesiredSize(ctx context.Context, filename string, d spec.Deployment) error {
	if filename == "" {
		filename = "<request>"
	}
	size, err := instanceSize(d.Spec.Container)
	if err != nil {
		return err
	}
	if size-instanceOverhead > MaxContainerSpec {
		return s.refuseApply(d, fmt.Sprintf("%s: deployment %s: spec.container is %d bytes as agents get it (JSON); at most %d are allowed: "+
			"move large values out of env and args (into a file in a volume, say)", filename, d.Metadata.Name, size-instanceOverhead, MaxContainerSpec))
	}
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		return err
	}
	deps, err := s.store.ListDeployments(ctx, "")
	if err != nil {
		return err
	}
	others := map[string]int{} // node ID → bytes of the other deployments
	for _, o := range deps {
		if o.Project == d.Metadata.Project && o.Name == d.Metadata.Name {
			continue
		}
		osize, err := instanceSize(o.Spec.Spec.Container)
		if err != nil {
			return err
		}
		targets, per := spread(nodes, o.Spec.Spec)
		for _, n := range targets {
			others[n.ID] += per * osize
		}
	}
	targets, per := spread(nodes, d.Spec)
	var worst api.Node
	worstSize, over := 0, 0
	for _, n := range targets {
		if total := others[n.ID] + per*size; total > controller.MaxDesiredState {
			over++
			if total > worstSize {
				worst, worstSize = n, total
			}
		}
	}
	if over == 0 {
		return nil
	}
	return s.refuseApply(d, fmt.Sprintf("%s: deployment %s: the desired state of node %s would be about %d bytes (%d instance(s) of %d bytes and %d bytes of other deployments), "+
		"over the %d bytes the server sends an agent in one message; %d of the %d nodes it targets are over. "+
		"Make the container spec smaller, or spread the deployments over more nodes",
		filename, d.Metadata.Name, worst.Name, worstSize, per, size, others[worst.ID], controller.MaxDesiredState, over, len(targets)))
}

// instanceSize is about what one instance of container c adds to a desired state.
func instanceSize(c spec.Container) (int, error) {
	b, err := json.Marshal(c)
	return len(b) + instanceOverhead, err
}

// spread returns the nodes a deployment of spec ds targets and how many
// of its instances each gets at most when they are spread evenly over the
// ready ones (all of them, when none is ready).
func spread(nodes []api.Node, ds spec.DeploymentSpec) ([]api.Node, int) {
	var targets []api.Node
	ready := 0
	for _, n := range nodes {
		if ds.Selector.Matches(n.Labels) {
			targets = append(targets, n)
			if n.State == api.NodeReady {
				ready++
			}
		}
	}
	if ds.Mode != spec.ModeReplicated {
		return targets, 1
	}
	if ready == 0 {
		ready = len(targets)
	}
	if ds.Replicas == 0 || ready == 0 {
		return nil, 0
	}
	return targets, (ds.Replicas + ready - 1) / ready
}

// refuseApply logs why an apply of d is refused and returns msg as a 400.
func (s *Handler) refuseApply(d spec.Deployment, msg string) error {
	s.log.Warn("apply refused", "project", d.Metadata.Project, "deployment", d.Metadata.Name, "reason", msg)
	return badRequestf("%s", msg)
}
