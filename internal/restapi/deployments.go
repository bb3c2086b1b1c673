package restapi

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/authz"
	"github.com/dockfleet/dockfleet/internal/controller"
	"github.com/dockfleet/dockfleet/internal/registry"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

func (s *Handler) apply(w http.ResponseWriter, r *http.Request) error {
	filename := r.URL.Query().Get("filename")
	if filename == "" {
		filename = "<request>"
	}
	docs, err := s.parseSpec(r, filename)
	if err != nil {
		return err
	}
	if err := s.checkApplyProjects(r, docs); err != nil {
		return err
	}
	// Every document is checked, and its image resolved, before any is
	// written: a registry's refusal of one image refuses the whole apply.
	plans := make([]applyPlan, len(docs))
	for i, d := range docs {
		if plans[i], err = s.planDeployment(r, filename, d); err != nil {
			return err
		}
	}
	// Even when a later document fails to be written, the earlier ones were applied.
	defer s.ctl.Need(controller.ReloadDeployments | controller.Place)
	var resp api.ApplyResponse
	for _, p := range plans {
		res, err := s.applyDeployment(r.Context(), p)
		if err != nil {
			return err
		}
		resp.Results = append(resp.Results, res)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// applyPlan is what apply will write for one document.
type applyPlan struct {
	d      spec.Deployment
	cur    api.Deployment
	res    api.ApplyResult
	digest string // the pinned image, "" when not resolved at apply
}

// planDeployment checks one document against what the server holds and
// resolves its image unless the deployment is unchanged.
func (s *Handler) planDeployment(r *http.Request, filename string, d spec.Deployment) (applyPlan, error) {
	ctx := r.Context()
	p := applyPlan{d: d, res: api.ApplyResult{Project: d.Metadata.Project, Name: d.Metadata.Name}}
	cur, err := s.store.GetDeployment(ctx, p.res.Project, p.res.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		cur = api.Deployment{Project: p.res.Project, Name: p.res.Name, CreatedAt: time.Now().UTC()}
	case err != nil:
		return p, err
	default:
		old, _ := json.Marshal(cur.Spec)
		neu, _ := json.Marshal(d)
		if bytes.Equal(old, neu) {
			p.res.Action, p.res.Revision = api.ActionUnchanged, cur.Revision
			return p, nil
		}
	}
	p.cur = cur
	if err := s.checkProjectNodes(ctx, filename, d); err != nil {
		return p, err
	}
	if err := s.checkTargets(ctx, r.URL.Query().Get("filename"), d); err != nil {
		return p, err
	}
	if err := s.checkDesiredSize(ctx, r.URL.Query().Get("filename"), d); err != nil {
		return p, err
	}
	p.res.Action = api.ActionConfigured
	if cur.Version == 0 {
		p.res.Action = api.ActionCreated
	}
	p.digest, err = s.resolve(ctx, filename, d, &p.res)
	return p, err
}

func (s *Handler) applyDeployment(ctx context.Context, p applyPlan) (api.ApplyResult, error) {
	res := p.res
	if res.Action == api.ActionUnchanged {
		return res, nil
	}
	store.AuditOf(ctx).SetTarget(res.Project, "deployment:"+res.Name)
	rev, ro, err := s.newRevision(ctx, p.cur, api.Revision{Spec: p.d, Cause: "apply", ImageDigest: p.digest})
	if err != nil {
		return res, err
	}
	res.Revision, res.Rollout = rev.Number, ro.ID
	s.log.Info("deployment applied", "project", res.Project, "deployment", res.Name, "action", res.Action, "revision", res.Revision, "rollout_id", ro.ID)
	return res, nil
}

// resolve pins a deployment's image to the digest its registry names now.
// A registry's answer other than a digest (no such tag, access denied)
// refuses the apply. When the server gets no answer, the deployment's
// image policy decides: resolveOnServer refuses the apply, pinFromNodes
// lets the first node to pull the image pin its digest, in the image's own
// repository, and res gets a warning saying so. Under unpinned no registry
// is asked.
func (s *Handler) resolve(ctx context.Context, filename string, d spec.Deployment, res *api.ApplyResult) (string, error) {
	image := d.Spec.Container.Image
	where := fmt.Sprintf("%s: deployment %s: spec.container.image", filename, d.Metadata.Name)
	if err := s.allowRegistry(image); err != nil {
		return "", badRequestf("%s: %v", where, err)
	}
	policy := cmp.Or(d.Spec.ImagePolicy, s.imagePolicy)
	if policy == spec.ImagePolicyUnpinned {
		return "", nil
	}
	digest, err := s.resolveDigest(ctx, image)
	if err == nil {
		return digest, nil
	}
	if ctx.Err() != nil {
		return "", err // the client is gone
	}
	log := s.log.With("project", d.Metadata.Project, "deployment", d.Metadata.Name, "image", image, "image_policy", policy)
	switch {
	case !errors.Is(err, registry.ErrUnreachable):
		log.Info("apply refused: the registry did not resolve the image", "reason", err)
		return "", badRequestf("%s: %v", where, err)
	case policy == spec.ImagePolicyResolveOnServer:
		log.Info("apply refused: the server cannot reach the image's registry", "reason", err)
		return "", badRequestf("%s: %v; imagePolicy %s needs the server itself to reach the registry "+
			"(check its network and registry credentials), or the spec may say imagePolicy: %s", where, err, policy, spec.ImagePolicyPinFromNodes)
	}
	log.Warn("image not resolved at apply; the first node to pull it pins its digest", "reason", err)
	res.Warnings = append(res.Warnings, fmt.Sprintf("image %s was not resolved at apply (%v): the first node to pull it pins "+
		"its digest, in the image's own repository; imagePolicy: %s refuses such an apply instead", image, err, spec.ImagePolicyResolveOnServer))
	return "", nil
}

// RegistryHosts checks and normalizes server.Config.RegistryAllow: each
// entry is the registry part of an image reference, in the form
// reference.Domain gives it (index.docker.io is docker.io), lower case.
func RegistryHosts(allow []string) ([]string, error) {
	var hosts []string
	for _, h := range allow {
		h = strings.ToLower(h)
		// A name without a dot or port parses as a Docker Hub path, so the
		// domain must come back as given (index.docker.io normalizes).
		named, err := reference.ParseNormalizedNamed(h + "/image")
		if err != nil || reference.Domain(named) != h && h != "index.docker.io" {
			return nil, fmt.Errorf("server: allowed registry %q: want a registry host or host:port, e.g. ghcr.io or 10.0.0.5:5000 (--registry-allow)", h)
		}
		hosts = append(hosts, reference.Domain(named))
	}
	return hosts, nil
}

// allowRegistry refuses an image whose registry Config.RegistryAllow does
// not list, before the server contacts it.
func (s *Handler) allowRegistry(image string) error {
	if len(s.registryAllow) == 0 {
		return nil
	}
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return fmt.Errorf("image %q: %w", image, err)
	}
	if domain := strings.ToLower(reference.Domain(named)); !slices.Contains(s.registryAllow, domain) {
		return fmt.Errorf("image %s: registry %s is not allowed on this server; allowed: %s", image, domain, strings.Join(s.registryAllow, ", "))
	}
	return nil
}

// newRevision makes revision N+1 of deployment cur from rev (its spec,
// cause and image pin) and starts the rollout to it from the stable
// revision, in one store transaction.
func (s *Handler) newRevision(ctx context.Context, cur api.Deployment, rev api.Revision) (api.Revision, api.Rollout, error) {
	now := time.Now().UTC()
	d, cause := rev.Spec, rev.Cause
	cur.Spec, cur.Revision, cur.UpdatedAt = d, cur.Revision+1, now
	rev.Project, rev.Deployment, rev.Number, rev.CreatedAt = cur.Project, cur.Name, cur.Revision, now
	ro := api.Rollout{ID: controller.NewID(), Project: cur.Project, Deployment: cur.Name, From: cur.StableRevision, To: rev.Number,
		State: api.RolloutRunning, CreatedAt: now, UpdatedAt: now}
	ev := api.Event{Time: now, Project: cur.Project, Deployment: cur.Name, Rollout: ro.ID, Type: "rollout.started",
		Message: fmt.Sprintf("revision %d (%s, image %s): rolling out from revision %d", rev.Number, cause, d.Spec.Container.Image, ro.From)}
	if _, err := s.store.ApplyRevision(ctx, cur, rev, ro, []api.Event{ev}); err != nil {
		return rev, ro, err
	}
	s.events.Notify()
	return rev, ro, nil
}

// checkTargets refuses an update strategy that cannot work on the nodes a
// global deployment targets now: a canary larger than all of them.
func (s *Handler) checkTargets(ctx context.Context, filename string, d spec.Deployment) error {
	c := d.Spec.Update.Canary
	if d.Spec.Mode != spec.ModeGlobal || c.Value == 0 || c.Percent {
		return nil
	}
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		return err
	}
	targets := 0
	for _, n := range nodes {
		if d.Spec.Selector.Matches(n.Labels) {
			targets++
		}
	}
	if c.Value > targets {
		if filename == "" {
			filename = "<request>"
		}
		return badRequestf("%s: deployment %s: spec.update.canary: %d is more than the %d nodes it targets", filename, d.Metadata.Name, c.Value, targets)
	}
	return nil
}

func (s *Handler) undo(w http.ResponseWriter, r *http.Request) error {
	project, name := r.PathValue("project"), r.PathValue("name")
	var req api.UndoRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			return err
		}
	}
	if req.ToRevision < 0 {
		return badRequestf("toRevision: %d is negative", req.ToRevision)
	}
	cur, err := s.deployment(r, project, name)
	if err != nil {
		return err
	}
	to := req.ToRevision
	if to == 0 {
		if to = cur.StableRevision - 1; to < 1 {
			return conflict{fmt.Sprintf("deployment %q has no revision before its stable revision %d to go back to; name one with --to-revision", name, cur.StableRevision)}
		}
	}
	target, err := s.store.GetRevision(r.Context(), project, name, to)
	if errors.Is(err, store.ErrNotFound) {
		return notFound{fmt.Sprintf("deployment %q has no revision %d (it has 1 to %d)", name, to, cur.Revision)}
	}
	if err != nil {
		return err
	}
	back := api.Revision{Spec: target.Spec, Cause: fmt.Sprintf("undo to revision %d", to)}
	// The pin goes back too, with who made it, unless it is one a node
	// chose before pins were checked: that one is not an image to run.
	if target.ImageDigest != "" {
		if _, err := registry.Pin(target.Spec.Spec.Container.Image, target.ImageDigest); err != nil {
			s.log.Warn("undo leaves out the revision's invalid image pin", "project", project, "deployment", name, "revision", to,
				"pinned_by", target.PinnedBy, "err", err)
		} else {
			back.ImageDigest, back.PinnedBy, back.PinnedByName = target.ImageDigest, target.PinnedBy, target.PinnedByName
		}
	}
	rev, ro, err := s.newRevision(r.Context(), cur, back)
	if err != nil {
		return err
	}
	s.log.Info("deployment rolled back", "project", project, "deployment", name, "to_revision", to, "revision", rev.Number, "rollout_id", ro.ID)
	s.ctl.Need(controller.ReloadDeployments | controller.Place)
	writeJSON(w, http.StatusOK, api.ApplyResult{Project: project, Name: name, Action: api.ActionConfigured, Revision: rev.Number, Rollout: ro.ID})
	return nil
}

func (s *Handler) listDeployments(w http.ResponseWriter, r *http.Request) error {
	ds, err := s.store.ListDeployments(r.Context(), r.PathValue("project"))
	if err != nil {
		return err
	}
	writeList(w, ds)
	return nil
}

func (s *Handler) getDeployment(w http.ResponseWriter, r *http.Request) error {
	project, name := r.PathValue("project"), r.PathValue("name")
	d, err := s.deployment(r, project, name)
	if err != nil {
		return err
	}
	is, err := s.instances(r, store.InstanceFilter{Project: project, Deployment: name})
	if err != nil {
		return err
	}
	st := api.DeploymentStatus{Deployment: d, Instances: is}
	if d.Revision > 0 {
		rev, err := s.store.GetRevision(r.Context(), project, name, d.Revision)
		if err != nil {
			return err
		}
		st.ImageDigest, st.PinnedBy, st.PinnedByName = rev.ImageDigest, rev.PinnedBy, rev.PinnedByName
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Handler) deleteDeployment(w http.ResponseWriter, r *http.Request) error {
	project, name := r.PathValue("project"), r.PathValue("name")
	err := s.store.DeleteDeployment(r.Context(), project, name)
	if errors.Is(err, store.ErrNotFound) {
		return notFound{fmt.Sprintf("no deployment %q in project %q", name, project)}
	}
	if err != nil {
		return err
	}
	s.log.Info("deployment deleted", "project", project, "deployment", name)
	if err := s.store.AppendEvents(r.Context(), []api.Event{{Time: time.Now().UTC(), Project: project, Deployment: name,
		Type: "deployment.deleted", Message: "deleted; its containers are being removed from every node"}}); err != nil {
		s.log.Error("recording event", "err", err)
	}
	s.events.Notify()
	s.ctl.Need(controller.ReloadDeployments | controller.ReloadInstances | controller.Place)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Handler) listInstances(w http.ResponseWriter, r *http.Request) error {
	is, err := s.instances(r, store.InstanceFilter{Project: r.PathValue("project"), Deployment: r.URL.Query().Get("deployment")})
	if err != nil {
		return err
	}
	writeList(w, is)
	return nil
}

// instances lists instances with their node names filled in.
func (s *Handler) instances(r *http.Request, f store.InstanceFilter) ([]api.Instance, error) {
	is, err := s.store.ListInstances(r.Context(), f)
	if err != nil {
		return nil, err
	}
	s.live.Names(is)
	// A node this server's memory does not know (on a replica of several,
	// one enrolled through another replica) is named from the store.
	if slices.ContainsFunc(is, func(i api.Instance) bool { return i.NodeName == "" }) {
		nodes, err := s.store.ListNodes(r.Context())
		if err != nil {
			return nil, err
		}
		names := make(map[string]string, len(nodes))
		for _, n := range nodes {
			names[n.ID] = n.Name
		}
		for i := range is {
			if is[i].NodeName == "" {
				is[i].NodeName = names[is[i].NodeID]
			}
		}
	}
	return is, nil
}

// checkApplyProjects refuses an apply with a document in a project the
// caller may not deploy to, or that does not exist: one it cannot see is
// answered as one that does not exist.
func (s *Handler) checkApplyProjects(r *http.Request, docs []spec.Deployment) error {
	p := principalOf(r.Context())
	for _, d := range docs {
		project := d.Metadata.Project
		if err := s.checkProjectExists(r, project); err != nil {
			return err
		}
		if !p.Can(authz.DeploymentsWrite, project) {
			return forbidden{fmt.Sprintf("%s may not deploy to project %s: it needs the %s permission there", actor(p), project, authz.DeploymentsWrite)}
		}
	}
	return nil
}

// checkProjectNodes refuses a deployment that selects nodes its project's
// node selector does not allow, naming some of them.
func (s *Handler) checkProjectNodes(ctx context.Context, filename string, d spec.Deployment) error {
	proj, err := s.store.GetProject(ctx, d.Metadata.Project)
	if err != nil {
		return err
	}
	if proj.NodeSelector.MatchLabels == nil && proj.NodeSelector.MatchExpressions == nil {
		return nil
	}
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		return err
	}
	var outside []string
	for _, n := range nodes {
		if d.Spec.Selector.Matches(n.Labels) && !proj.NodeSelector.Matches(n.Labels) {
			outside = append(outside, n.Name)
		}
	}
	if len(outside) == 0 {
		return nil
	}
	slices.Sort(outside)
	more := ""
	if len(outside) > 5 {
		more = fmt.Sprintf(" and %d more", len(outside)-5)
		outside = outside[:5]
	}
	return badRequestf("%s: deployment %s: spec.selector selects nodes outside project %s, whose node selector is %s: %s%s; narrow spec.selector to the project's nodes",
		filename, d.Metadata.Name, proj.Name, toJSONString(proj.NodeSelector), strings.Join(outside, ", "), more)
}

func toJSONString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
