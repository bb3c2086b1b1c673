package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/registry"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// specHash identifies a container spec; agents replace a container whose
// label carries another hash. encoding/json sorts map keys, so equal specs
// hash equally.
func specHash(c spec.Container) string {
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request) error {
	filename := r.URL.Query().Get("filename")
	if filename == "" {
		filename = "<request>"
	}
	docs, err := s.parseSpec(r, filename)
	if err != nil {
		return err
	}
	// Even when a later document fails, the earlier ones were applied.
	defer s.fleet.need(reloadDeployments | place)
	var resp api.ApplyResponse
	for _, d := range docs {
		res, err := s.applyDeployment(r, d)
		if err != nil {
			return err
		}
		resp.Results = append(resp.Results, res)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) applyDeployment(r *http.Request, d spec.Deployment) (api.ApplyResult, error) {
	ctx := r.Context()
	res := api.ApplyResult{Project: d.Metadata.Project, Name: d.Metadata.Name}
	now := time.Now().UTC()
	cur, err := s.store.GetDeployment(ctx, res.Project, res.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		cur = api.Deployment{Project: res.Project, Name: res.Name, CreatedAt: now}
	case err != nil:
		return res, err
	default:
		old, _ := json.Marshal(cur.Spec)
		neu, _ := json.Marshal(d)
		if bytes.Equal(old, neu) {
			res.Action, res.Revision = api.ActionUnchanged, cur.Revision
			return res, nil
		}
	}
	if err := s.checkTargets(ctx, r.URL.Query().Get("filename"), d); err != nil {
		return res, err
	}
	if err := s.checkDesiredSize(ctx, r.URL.Query().Get("filename"), d); err != nil {
		return res, err
	}
	res.Action = api.ActionConfigured
	if cur.Version == 0 {
		res.Action = api.ActionCreated
	}
	rev, ro, err := s.newRevision(ctx, cur, d, "apply", s.resolve(ctx, d))
	if err != nil {
		return res, err
	}
	res.Revision, res.Rollout = rev.Number, ro.ID
	s.log.Info("deployment applied", "project", res.Project, "deployment", res.Name, "action", res.Action, "revision", res.Revision, "rollout_id", ro.ID)
	return res, nil
}

// resolve pins a deployment's image to the digest its registry names now.
// When the registry cannot say (unreachable, or it wants credentials the
// agents may have), the first agent to pull the image pins it instead.
func (s *Server) resolve(ctx context.Context, d spec.Deployment) string {
	digest, err := registry.Resolve(ctx, d.Spec.Container.Image)
	if err != nil {
		s.log.Info("image not resolved at apply; the first agent to pull it pins its digest",
			"deployment", d.Metadata.Name, "image", d.Spec.Container.Image, "reason", err)
		return ""
	}
	return digest
}

// newRevision makes revision N+1 of deployment cur with spec d and starts the
// rollout to it from the stable revision, in one store transaction.
func (s *Server) newRevision(ctx context.Context, cur api.Deployment, d spec.Deployment, cause, digest string) (api.Revision, api.Rollout, error) {
	now := time.Now().UTC()
	cur.Spec, cur.Revision, cur.UpdatedAt = d, cur.Revision+1, now
	rev := api.Revision{Project: cur.Project, Deployment: cur.Name, Number: cur.Revision, Spec: d, ImageDigest: digest, Cause: cause, CreatedAt: now}
	ro := api.Rollout{ID: newID(), Project: cur.Project, Deployment: cur.Name, From: cur.StableRevision, To: rev.Number,
		State: api.RolloutRunning, CreatedAt: now, UpdatedAt: now}
	ev := api.Event{Time: now, Project: cur.Project, Deployment: cur.Name, Rollout: ro.ID, Type: "rollout.started",
		Message: fmt.Sprintf("revision %d (%s, image %s): rolling out from revision %d", rev.Number, cause, d.Spec.Container.Image, ro.From)}
	if _, err := s.store.ApplyRevision(ctx, cur, rev, ro, []api.Event{ev}); err != nil {
		return rev, ro, err
	}
	s.events.notify()
	return rev, ro, nil
}

// checkTargets refuses an update strategy that cannot work on the nodes a
// global deployment targets now: a canary larger than all of them.
func (s *Server) checkTargets(ctx context.Context, filename string, d spec.Deployment) error {
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

func (s *Server) undo(w http.ResponseWriter, r *http.Request) error {
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
	rev, ro, err := s.newRevision(r.Context(), cur, target.Spec, fmt.Sprintf("undo to revision %d", to), target.ImageDigest)
	if err != nil {
		return err
	}
	s.log.Info("deployment rolled back", "project", project, "deployment", name, "to_revision", to, "revision", rev.Number, "rollout_id", ro.ID)
	s.fleet.need(reloadDeployments | place)
	writeJSON(w, http.StatusOK, api.ApplyResult{Project: project, Name: name, Action: api.ActionConfigured, Revision: rev.Number, Rollout: ro.ID})
	return nil
}

func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request) error {
	ds, err := s.store.ListDeployments(r.Context(), r.PathValue("project"))
	if err != nil {
		return err
	}
	writeList(w, ds)
	return nil
}

func (s *Server) getDeployment(w http.ResponseWriter, r *http.Request) error {
	project, name := r.PathValue("project"), r.PathValue("name")
	d, err := s.deployment(r, project, name)
	if err != nil {
		return err
	}
	is, err := s.instances(r, store.InstanceFilter{Project: project, Deployment: name})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.DeploymentStatus{Deployment: d, Instances: is})
	return nil
}

func (s *Server) deleteDeployment(w http.ResponseWriter, r *http.Request) error {
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
	s.events.notify()
	s.fleet.need(reloadDeployments | reloadInstances | place)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listInstances(w http.ResponseWriter, r *http.Request) error {
	is, err := s.instances(r, store.InstanceFilter{Project: r.PathValue("project"), Deployment: r.URL.Query().Get("deployment")})
	if err != nil {
		return err
	}
	writeList(w, is)
	return nil
}

// instances lists instances with their node names filled in.
func (s *Server) instances(r *http.Request, f store.InstanceFilter) ([]api.Instance, error) {
	is, err := s.store.ListInstances(r.Context(), f)
	if err != nil {
		return nil, err
	}
	s.fleet.names(is)
	return is, nil
}
