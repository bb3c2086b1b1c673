package controller

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/registry"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// view is the controller's copy of what placement and rollouts read: the
// nodes, deployments, revisions and instances. Reading all of them from
// the store for every pass cost most of the server's CPU at 10,000 nodes,
// where a rollout's status reports start a pass every few milliseconds.
// Instead the controller mirrors its own writes into the view, reloads a
// part when the API has changed it (Controller.Need), and reloads everything at
// each resync, which keeps the controller level-triggered.
//
// Only the controller's goroutine (Controller.Run) touches a view.
type view struct {
	nodes map[string]api.Node
	deps  map[string]api.Deployment // by depKey
	// projectNodes are the node selectors of the projects that have one:
	// a deployment is placed on no node its project's selector leaves out.
	projectNodes map[string]spec.Selector
	revs         revisionSet
	insts        map[string]*api.Instance
	// byDep and byNode index insts by depKey and by node ID.
	byDep  map[string]map[string]*api.Instance
	byNode map[string]map[string]*api.Instance
}

func newView() *view {
	return &view{nodes: map[string]api.Node{}, deps: map[string]api.Deployment{}, revs: revisionSet{},
		insts: map[string]*api.Instance{}, byDep: map[string]map[string]*api.Instance{}, byNode: map[string]map[string]*api.Instance{}}
}

func depKey(project, name string) string { return project + "/" + name }

// Work is what a controller pass must do beyond stepping the active
// rollouts and pushing the desired states that changed.
type Work uint8

const (
	ReloadNodes       Work = 1 << iota // the API changed a node (labels)
	ReloadDeployments                  // the API changed deployments or revisions
	ReloadInstances                    // the API moved or deleted instances
	Place                              // deployments or node readiness changed: run placement
	// NodesJoined says that nodes enrolled through another replica; the
	// leader reads the new ones and hands each to Joined, which costs a
	// pass less than ReloadNodes. A pass itself ignores it.
	NodesJoined
	ReloadAll = ReloadNodes | ReloadDeployments | ReloadInstances | Place
)

// reload reads from the store the parts of the view that w names. warn
// reports revisions whose stored image pin is ignored.
func (v *view) reload(ctx context.Context, st store.Store, w Work, warn func(msg string, args ...any)) error {
	if w&ReloadNodes != 0 {
		nodes, err := st.ListNodes(ctx)
		if err != nil {
			return err
		}
		clear(v.nodes)
		for _, n := range nodes {
			v.nodes[n.ID] = n
		}
	}
	if w&ReloadDeployments != 0 {
		deps, err := st.ListDeployments(ctx, "")
		if err != nil {
			return err
		}
		revs, err := loadRevisions(ctx, st, deps, warn)
		if err != nil {
			return err
		}
		projects, err := st.ListProjects(ctx)
		if err != nil {
			return err
		}
		v.projectNodes = map[string]spec.Selector{}
		for _, p := range projects {
			if len(p.NodeSelector.MatchLabels)+len(p.NodeSelector.MatchExpressions) > 0 {
				v.projectNodes[p.Name] = p.NodeSelector
			}
		}
		clear(v.deps)
		for _, d := range deps {
			v.deps[depKey(d.Project, d.Name)] = d
		}
		v.revs = revs
	}
	if w&ReloadInstances != 0 {
		all, err := st.ListInstances(ctx, store.InstanceFilter{})
		if err != nil {
			return err
		}
		clear(v.insts)
		clear(v.byDep)
		clear(v.byNode)
		for i := range all {
			v.add(all[i])
		}
	}
	return nil
}

// add puts an instance in the view, replacing one of the same ID.
func (v *view) add(in api.Instance) {
	v.remove(in.ID)
	p := &in
	v.insts[in.ID] = p
	k := depKey(in.Project, in.Deployment)
	if v.byDep[k] == nil {
		v.byDep[k] = map[string]*api.Instance{}
	}
	v.byDep[k][in.ID] = p
	if v.byNode[in.NodeID] == nil {
		v.byNode[in.NodeID] = map[string]*api.Instance{}
	}
	v.byNode[in.NodeID][in.ID] = p
}

// remove drops an instance and returns it, if the view had it.
func (v *view) remove(id string) *api.Instance {
	in := v.insts[id]
	if in == nil {
		return nil
	}
	delete(v.insts, id)
	k := depKey(in.Project, in.Deployment)
	delete(v.byDep[k], id)
	if len(v.byDep[k]) == 0 {
		delete(v.byDep, k)
	}
	delete(v.byNode[in.NodeID], id)
	if len(v.byNode[in.NodeID]) == 0 {
		delete(v.byNode, in.NodeID)
	}
	return in
}

// deployment lists a deployment's instances oldest first, as the store does.
func (v *view) deployment(project, name string) []*api.Instance {
	m := v.byDep[depKey(project, name)]
	out := make([]*api.Instance, 0, len(m))
	for _, in := range m {
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b *api.Instance) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// status mirrors a status report the store took (UpdateInstanceStatuses
// said so); the store decided whether the report still applies.
func (v *view) status(st store.InstanceStatus) {
	in := v.insts[st.ID]
	if in == nil {
		return
	}
	in.State, in.Reason, in.ContainerID, in.ImageDigest, in.Restarts, in.UpdatedAt = st.State, st.Reason, st.ContainerID, st.ImageDigest, st.Restarts, st.At
	in.Version++
}

// move mirrors a rollout's move of an instance to another revision
// (store.StepRollout) at about time at.
func (v *view) move(m store.InstanceMove, at time.Time) {
	in := v.insts[m.ID]
	if in == nil {
		return
	}
	in.Revision, in.SpecHash, in.State, in.Reason, in.ImageDigest, in.UpdatedAt = m.Revision, m.SpecHash, api.InstancePending, "", "", at
	in.Version++
}

// revisionSet holds the revisions of every deployment, by revKey.
type revisionSet map[string]revisionInfo

type revisionInfo struct {
	rev        api.Revision
	image      string // the image agents pull: the pinned one when valid
	container  []byte // JSON of the container spec the agent runs
	hash       string
	startFirst bool
}

// loadRevisions reads every revision of deps; warn reports those whose
// stored image pin is ignored.
func loadRevisions(ctx context.Context, st store.Store, deps []api.Deployment, warn func(msg string, args ...any)) (revisionSet, error) {
	revs := revisionSet{}
	for _, d := range deps {
		rs, err := st.ListRevisions(ctx, d.Project, d.Name)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			ri, err := newRevisionInfo(r, warn)
			if err != nil {
				return nil, err
			}
			revs[revKey(d.Project, d.Name, r.Number)] = ri
		}
	}
	return revs, nil
}

// newRevisionInfo prepares what agents are sent for revision r. A stored
// pin that is not a digest of the spec's own repository (one a node chose
// before reports were checked) is ignored, with a warning: the nodes run
// the spec's image instead.
func newRevisionInfo(r api.Revision, warn func(msg string, args ...any)) (revisionInfo, error) {
	// Agents pull the pinned digest; the hash stays that of the spec, so
	// pinning never replaces a running container.
	c := r.Spec.Spec.Container
	if r.ImageDigest != "" {
		pinned, err := registry.Pin(c.Image, r.ImageDigest)
		if err != nil {
			warn("ignoring a revision's invalid image pin; its nodes run the spec's image", "project", r.Project,
				"deployment", r.Deployment, "revision", r.Number, "pinned_by", r.PinnedBy, "err", err)
		} else {
			c.Image = pinned
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return revisionInfo{}, err
	}
	return revisionInfo{rev: r, image: c.Image, container: b, hash: SpecHash(r.Spec.Spec.Container),
		startFirst: r.Spec.Spec.Update.Order == spec.OrderStartFirst}, nil
}

func revKey(project, name string, n int64) string { return fmt.Sprintf("%s/%s/%d", project, name, n) }

func (rs revisionSet) get(project, name string, n int64) (revisionInfo, bool) {
	ri, ok := rs[revKey(project, name, n)]
	return ri, ok
}

// hash is the spec hash of a revision; revision 0 (nothing) has none.
func (rs revisionSet) hash(project, name string, n int64) string {
	return rs[revKey(project, name, n)].hash
}
