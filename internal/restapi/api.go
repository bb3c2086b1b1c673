// Package restapi serves the REST API the CLI and the client package speak:
// nodes, enrollment tokens, apply, deployments, instances, rollouts and
// events. Package server binds its listener and mounts the Handler.
package restapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/dockfleet/dockfleet/internal/agentsvc"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/controller"
	"github.com/dockfleet/dockfleet/internal/fanout"
	"github.com/dockfleet/dockfleet/internal/liveness"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/sparselog"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// MaxSpecFile bounds an apply body; real specs are a few KiB. Parsing
// costs up to a hundred times the body (a YAML node per list item), so
// the bound is also what one apply may cost (review finding 14: 4 MiB of
// args took 900 MB).
const MaxSpecFile = 1 << 20

// badRequest is a client error that changed nothing.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func badRequestf(format string, a ...any) error { return badRequest{fmt.Sprintf(format, a...)} }

// Handler serves the REST API the CLI and the client package speak. It
// holds what its handlers use: the store, the CA (whose fingerprint tokens
// carry), the node gate (a revoked or removed node's connections close),
// the fleet's parts (liveness, fan-out, controller), and the bell that
// wakes event followers.
type Handler struct {
	store store.Store
	log   *slog.Logger
	ca    Authority
	gate  *agentsvc.Gate
	live  *liveness.Registry
	out   *fanout.Fanout
	ctl   *controller.Controller
	// revoked and removed tell the fleet a node was revoked or removed.
	revoked, removed func(id string)
	events           *EventBell
	// refusals logs the API requests refused for their caller's fault.
	refusals      *sparselog.Log
	applies       chan struct{} // the apply slots (applySlot)
	maxTokenTTL   time.Duration
	imagePolicy   spec.ImagePolicy
	registryAllow []string
	resolveDigest func(ctx context.Context, image string) (string, error)
	mux           *http.ServeMux
}

// Deps are what a Handler uses; every field is required but RegistryAllow.
type Deps struct {
	Store  store.Store
	Logger *slog.Logger
	CA     Authority
	Gate   *agentsvc.Gate
	Live   *liveness.Registry
	Out    *fanout.Fanout
	Ctl    *controller.Controller
	// Revoked and Removed tell the fleet a node was revoked or removed.
	Revoked, Removed func(id string)
	Events           *EventBell
	// MaxTokenTTL is the longest lifetime an enrollment token may be made for.
	MaxTokenTTL time.Duration
	// ImagePolicy is that of the deployments whose spec names none.
	ImagePolicy spec.ImagePolicy
	// RegistryAllow, when not empty, lists the registries images may come
	// from, as RegistryHosts returns them.
	RegistryAllow []string
	// Resolve asks an image's registry for the digest its tag names now.
	Resolve func(ctx context.Context, image string) (string, error)
}

// New makes the REST API handler of d.
func New(d Deps) *Handler {
	s := &Handler{store: d.Store, log: d.Logger, ca: d.CA, gate: d.Gate, live: d.Live, out: d.Out, ctl: d.Ctl,
		revoked: d.Revoked, removed: d.Removed, events: d.Events, refusals: sparselog.New(d.Logger, agentsvc.LimitLogInterval),
		applies: make(chan struct{}, maxApplies), maxTokenTTL: d.MaxTokenTTL, imagePolicy: d.ImagePolicy,
		registryAllow: d.RegistryAllow, resolveDigest: d.Resolve}
	s.mux = s.routes()
	return s
}

// ServeHTTP serves one API request.
func (s *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Handler) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	handle := func(pattern string, h func(w http.ResponseWriter, r *http.Request) error) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			err := s.authenticate(r)
			if err == nil {
				err = h(w, r)
			}
			if err != nil {
				s.writeError(w, r, err)
			}
		})
	}
	handle("GET /v1/nodes", s.listNodes)
	handle("GET /v1/nodes/{node}", s.getNode)
	handle("PATCH /v1/nodes/{node}/labels", s.patchNodeLabels)
	handle("POST /v1/nodes/{node}/revoke", s.revokeNode)
	handle("DELETE /v1/nodes/{node}", s.deleteNode)
	handle("POST /v1/nodes/{node}/cordon", s.scheduleNode(api.NodeCordoned, ""))
	handle("POST /v1/nodes/{node}/drain", s.scheduleNode(api.NodeDraining, "", api.NodeCordoned))
	handle("POST /v1/nodes/{node}/uncordon", s.scheduleNode(""))
	handle("POST /v1/tokens", s.createToken)
	handle("GET /v1/tokens", s.listTokens)
	handle("DELETE /v1/tokens/{id}", s.revokeToken)
	handle("POST /v1/apply", s.apply)
	handle("GET /v1/projects/{project}/deployments", s.listDeployments)
	handle("GET /v1/projects/{project}/deployments/{name}", s.getDeployment)
	handle("DELETE /v1/projects/{project}/deployments/{name}", s.deleteDeployment)
	handle("GET /v1/projects/{project}/instances", s.listInstances)
	handle("GET /v1/projects/{project}/deployments/{name}/revisions", s.listRevisions)
	handle("GET /v1/projects/{project}/deployments/{name}/rollout", s.getRollout)
	handle("POST /v1/projects/{project}/deployments/{name}/rollout/undo", s.undo)
	handle("POST /v1/projects/{project}/deployments/{name}/rollout/{action}", s.rolloutAction)
	handle("GET /v1/projects/{project}/events", s.listEvents)
	handle("POST /v1/store/accept-restore", s.acceptRestore)
	handle("GET /v1/ca", s.getCA)
	handle("POST /v1/ca/rotate", s.rotateCA)
	handle("POST /v1/ca/finish", s.finishCA)
	handle("/", func(w http.ResponseWriter, r *http.Request) error {
		return notFound{fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path)}
	})
	return mux
}

type notFound struct{ msg string }

func (e notFound) Error() string { return e.msg }

// writeError maps an error to its status code; this is the one place that does.
func (s *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		status = http.StatusInternalServerError
		body   = api.Error{Error: err.Error()}
		br     badRequest
		nf     notFound
		cf     conflict
		bz     busy
		fields spec.ErrorList
	)
	switch {
	case errors.Is(err, errUnauthorized):
		status = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Bearer realm="dockfleet"`)
	case errors.As(err, &fields):
		status = http.StatusBadRequest
		body.Error = fmt.Sprintf("invalid spec: %d problem(s)", len(fields))
		for _, f := range fields {
			body.Details = append(body.Details, f.Error())
		}
	case errors.As(err, &br):
		status = http.StatusBadRequest
	case errors.As(err, &nf), errors.Is(err, store.ErrNotFound):
		status = http.StatusNotFound
	case errors.As(err, &cf), errors.Is(err, store.ErrExists), errors.Is(err, store.ErrConflict):
		status = http.StatusConflict
	case errors.As(err, &bz):
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "10")
	case store.IsFull(err):
		// The operator must act: logged every time, as a failure is.
		s.log.Error("api request failed: the store's disk is full", "method", r.Method, "path", r.URL.Path, "err", err)
		status = http.StatusInsufficientStorage
		body.Error = "the server's disk is full: this change was not saved; free space where the server keeps its data (--data-dir), then retry"
	default:
		s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		body.Error = "internal server error; see the server log"
	}
	// A refusal is logged too, for the operator who was not the caller;
	// sparsely, since a client can send many. "Not found" is an answer.
	if status != http.StatusNotFound && status < 500 || status == http.StatusServiceUnavailable {
		s.refusals.Warn("api request refused", "method", r.Method, "path", r.URL.Path, "source", r.RemoteAddr,
			"status", status, "err", body.Error, "details", len(body.Details))
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// Compact: indenting the node list of a large fleet cost as much as
	// reading it from the store. `dockfleet get -o json` and jq indent.
	json.NewEncoder(w).Encode(v)
}

// writeList answers a list; an empty one is [] rather than null.
func writeList[T any](w http.ResponseWriter, items []T) {
	if items == nil {
		items = []T{}
	}
	writeJSON(w, http.StatusOK, items)
}

func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequestf("invalid request body: %v", err)
	}
	return nil
}

func (s *Handler) listNodes(w http.ResponseWriter, r *http.Request) error {
	nodes, err := s.store.ListNodes(r.Context())
	if err != nil {
		return err
	}
	for i := range nodes {
		s.live.Live(&nodes[i])
	}
	writeList(w, nodes)
	return nil
}

// findNode resolves a node by ID or by name. No name has the form of an
// ID (Enroll refuses those), so the two cannot be confused.
func (s *Handler) findNode(ctx context.Context, ref string) (api.Node, error) {
	n, err := s.store.GetNode(ctx, ref)
	if err == nil || !errors.Is(err, store.ErrNotFound) {
		return n, err
	}
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		return api.Node{}, err
	}
	for _, n := range nodes {
		if n.Name == ref {
			return n, nil
		}
	}
	return api.Node{}, notFound{fmt.Sprintf("no node with ID or name %q; dockfleet nodes lists them", ref)}
}

func (s *Handler) getNode(w http.ResponseWriter, r *http.Request) error {
	n, err := s.findNode(r.Context(), r.PathValue("node"))
	if err != nil {
		return err
	}
	s.live.Live(&n)
	writeJSON(w, http.StatusOK, n)
	return nil
}

func (s *Handler) patchNodeLabels(w http.ResponseWriter, r *http.Request) error {
	var p api.LabelPatch
	if err := decodeJSON(r, &p); err != nil {
		return err
	}
	for k, v := range p.Set {
		if err := spec.ValidateLabelKey(k); err != nil {
			return badRequestf("label %q: %v", k, err)
		}
		if err := spec.ValidateLabelValue(v); err != nil {
			return badRequestf("label %s=%q: %v", k, v, err)
		}
	}
	for _, k := range p.Remove {
		if err := spec.ValidateLabelKey(k); err != nil {
			return badRequestf("label %q: %v", k, err)
		}
	}
	// Liveness writes the same row; retry a few times on a version race.
	for attempt := 0; ; attempt++ {
		n, err := s.findNode(r.Context(), r.PathValue("node"))
		if err != nil {
			return err
		}
		labels := map[string]string{}
		for k, v := range n.Labels {
			labels[k] = v
		}
		for k, v := range p.Set {
			labels[k] = v
		}
		for _, k := range p.Remove {
			delete(labels, k)
		}
		n.Labels = labels
		n, err = s.store.UpdateNode(r.Context(), n)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return err
		}
		s.log.Info("node labels changed", "node_id", n.ID, "labels", n.Labels)
		s.ctl.Need(controller.ReloadNodes | controller.Place)
		s.live.Live(&n)
		writeJSON(w, http.StatusOK, n)
		return nil
	}
}

// revokeNode revokes a node's identity: its certificates are refused from
// now on, its connections are closed, and its instances count as lost.
// Revoking a revoked node changes nothing.
func (s *Handler) revokeNode(w http.ResponseWriter, r *http.Request) error {
	n, err := s.findNode(r.Context(), r.PathValue("node"))
	if err != nil {
		return err
	}
	n, err = s.store.RevokeNode(r.Context(), n.ID, "revoked", time.Now().UTC())
	if err != nil {
		return err
	}
	s.gate.Revoke(n.ID)
	s.revoked(n.ID)
	s.log.Warn("node revoked", "node_id", n.ID, "name", n.Name)
	s.live.Live(&n)
	writeJSON(w, http.StatusOK, n)
	return nil
}

// scheduleNode returns the handler that sets a node's scheduling to to,
// if it is one of from (any, if from is empty): cordon leaves a draining
// node draining, drain a drained one drained. The controller does the
// rest: a drain moves instances, an uncordon lets placement use the node.
func (s *Handler) scheduleNode(to api.NodeScheduling, from ...api.NodeScheduling) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		n, err := s.findNode(r.Context(), r.PathValue("node"))
		if err != nil {
			return err
		}
		if n.State == api.NodeRevoked {
			return conflict{fmt.Sprintf("node %s (%s) is revoked: it takes no work and its instances have moved already; remove it with dockfleet node rm %s",
				n.Name, n.ID, n.Name)}
		}
		n, err = s.store.SetNodeScheduling(r.Context(), n.ID, from, to)
		if err != nil {
			return err
		}
		s.log.Info("node scheduling set", "node_id", n.ID, "name", n.Name, "scheduling", cmp.Or(string(n.Scheduling), "schedulable"))
		s.ctl.Need(controller.ReloadNodes | controller.Place)
		s.live.Live(&n)
		writeJSON(w, http.StatusOK, n)
		return nil
	}
}

// deleteNode removes a node: its row and instances go (placement moves what
// they ran, as for a node that left), and its identity is refused from now
// on. A connected node is removed only with ?force=true.
func (s *Handler) deleteNode(w http.ResponseWriter, r *http.Request) error {
	force := r.URL.Query().Get("force") == "true"
	n, err := s.findNode(r.Context(), r.PathValue("node"))
	if err != nil {
		return err
	}
	if !force && s.out.Connected(n.ID) {
		return conflict{fmt.Sprintf("node %s (%s) is connected: stop its agent first, or remove it anyway with dockfleet node rm --force (its connection is closed)", n.Name, n.ID)}
	}
	if err := s.store.DeleteNode(r.Context(), n.ID, "removed", time.Now().UTC()); err != nil {
		return err
	}
	s.gate.Revoke(n.ID)
	s.removed(n.ID)
	s.log.Warn("node removed", "node_id", n.ID, "name", n.Name, "forced", force)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Handler) createToken(w http.ResponseWriter, r *http.Request) error {
	var req api.TokenRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	t, err := s.CreateEnrollToken(r.Context(), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, t)
	return nil
}

// An enrollment token lets whoever holds it add a node to the fleet, and
// a node is given the specs of the deployments it matches: a token that
// nobody asked to keep should not outlive its use. One host, enrolled
// within the hour, is what a token is for unless its maker says otherwise.
const (
	DefaultTokenTTL  = time.Hour
	DefaultTokenUses = 1
	// DefaultMaxTokenTTL bounds what a token may be made for: long enough
	// to image a batch of hosts over weeks, short of for ever.
	DefaultMaxTokenTTL = 30 * 24 * time.Hour
)

// CreateEnrollToken makes an enrollment token, as POST /v1/tokens does. The
// answer is the only place its secret appears.
func (s *Handler) CreateEnrollToken(ctx context.Context, req api.TokenRequest) (api.EnrollToken, error) {
	t := api.EnrollToken{ID: pki.NewTokenID(), Labels: req.Labels, MaxUses: req.Uses, CreatedAt: time.Now().UTC(),
		AgentLabels: req.AgentLabels, Node: req.Node}
	ttl := DefaultTokenTTL
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			return t, badRequestf("ttl: %q is not a positive duration (e.g. 1h, 30m)", req.TTL)
		}
	}
	if ttl > s.maxTokenTTL {
		return t, badRequestf("ttl: %s is longer than this server allows for an enrollment token (%s, its --max-token-ttl)", req.TTL, s.maxTokenTTL)
	}
	t.ExpiresAt = t.CreatedAt.Add(ttl)
	switch {
	case req.Uses < 0:
		return t, badRequestf("uses: %d is negative; give how many agents may enroll with the token (default %d)", req.Uses, DefaultTokenUses)
	case req.Uses == 0:
		t.MaxUses = DefaultTokenUses
	}
	for k, v := range req.Labels {
		if err := spec.ValidateLabelKey(k); err != nil {
			return t, badRequestf("labels: %q: %v", k, err)
		}
		if err := spec.ValidateLabelValue(v); err != nil {
			return t, badRequestf("labels: %s=%q: %v", k, v, err)
		}
	}
	for _, k := range req.AgentLabels {
		if k == "*" {
			continue
		}
		if err := spec.ValidateLabelKey(k); err != nil {
			return t, badRequestf("agentLabels: %q: %v", k, err)
		}
	}
	if req.Node != "" {
		// A re-enrollment token names a node that exists, and is for it
		// alone: the node keeps its labels.
		n, err := s.findNode(ctx, req.Node)
		if err != nil {
			return t, err
		}
		if n.State == api.NodeRevoked {
			return t, conflict{fmt.Sprintf("node %s was revoked and cannot re-enroll; remove it (dockfleet node rm %s) and enroll the host as a new node", n.Name, n.Name)}
		}
		if len(req.Labels)+len(req.AgentLabels) > 0 {
			return t, badRequestf("node: a re-enrollment token keeps the node's labels; give no labels or agentLabels")
		}
		if req.Uses > 1 {
			return t, badRequestf("uses: a re-enrollment token is good for one use; make another for a later recovery")
		}
		t.Node, t.MaxUses = n.Name, 1
	}
	secret := pki.NewSecret()
	if err := s.store.CreateEnrollToken(ctx, t, pki.HashSecret(secret)); err != nil {
		return t, err
	}
	t.Token = pki.FormatEnrollToken(s.ca.TokenFingerprint(), t.ID, secret)
	s.log.Info("enrollment token created", "token_id", t.ID, "max_uses", t.MaxUses, "expires_at", t.ExpiresAt)
	return t, nil
}

func (s *Handler) listTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.store.ListEnrollTokens(r.Context())
	if err != nil {
		return err
	}
	writeList(w, ts)
	return nil
}

func (s *Handler) revokeToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := s.store.RevokeEnrollToken(r.Context(), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound{fmt.Sprintf("no enrollment token %q", id)}
		}
		return err
	}
	s.log.Info("enrollment token revoked", "token_id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
