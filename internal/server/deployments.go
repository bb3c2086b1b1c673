package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
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
	body, err := io.ReadAll(io.LimitReader(r.Body, maxSpecFile+1))
	if err != nil {
		return badRequestf("reading spec: %v", err)
	}
	if len(body) > maxSpecFile {
		return badRequestf("%s: spec is larger than %d bytes", filename, maxSpecFile)
	}
	docs, err := spec.Parse(filename, body)
	if err != nil {
		return err
	}
	var resp api.ApplyResponse
	for _, d := range docs {
		res, err := s.applyDeployment(r, d)
		if err != nil {
			return err
		}
		resp.Results = append(resp.Results, res)
	}
	s.fleet.trigger()
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
		created, err := s.store.PutDeployment(ctx, api.Deployment{Project: res.Project, Name: res.Name, Revision: 1, Spec: d, CreatedAt: now, UpdatedAt: now})
		if err != nil {
			return res, err
		}
		res.Action, res.Revision = api.ActionCreated, created.Revision
	case err != nil:
		return res, err
	default:
		old, _ := json.Marshal(cur.Spec)
		neu, _ := json.Marshal(d)
		if bytes.Equal(old, neu) {
			res.Action, res.Revision = api.ActionUnchanged, cur.Revision
			return res, nil
		}
		cur.Spec, cur.Revision, cur.UpdatedAt = d, cur.Revision+1, now
		updated, err := s.store.PutDeployment(ctx, cur)
		if err != nil {
			return res, err
		}
		res.Action, res.Revision = api.ActionConfigured, updated.Revision
	}
	s.log.Info("deployment applied", "project", res.Project, "deployment", res.Name, "action", res.Action, "revision", res.Revision)
	return res, nil
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
	d, err := s.store.GetDeployment(r.Context(), project, name)
	if errors.Is(err, store.ErrNotFound) {
		return notFound{fmt.Sprintf("no deployment %q in project %q", name, project)}
	}
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
	s.fleet.trigger()
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
	nodes, err := s.store.ListNodes(r.Context())
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(nodes))
	for _, n := range nodes {
		names[n.ID] = n.Name
	}
	for i := range is {
		is[i].NodeName = names[is[i].NodeID]
	}
	return is, nil
}
