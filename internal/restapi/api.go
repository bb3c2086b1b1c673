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
	"slices"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentsvc"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/authz"
	"github.com/dockfleet/dockfleet/internal/controller"
	"github.com/dockfleet/dockfleet/internal/fanout"
	"github.com/dockfleet/dockfleet/internal/httpguard"
	"github.com/dockfleet/dockfleet/internal/liveness"
	"github.com/dockfleet/dockfleet/internal/oidcauth"
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
	clock         clockwork.Clock
	sessionTTL    time.Duration
	logins        LoginLimiter
	tokens        TokenLimiter
	sso           *oidcauth.Verifier
	auth          api.AuthInfo
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
	// Clock tells the time credentials expire by; nil is the real clock.
	Clock clockwork.Clock
	// SessionTTL is how long a login lasts; 0 is DefaultSessionTTL.
	SessionTTL time.Duration
	// Logins, if set, limits password guessing; Tokens, if set, the
	// requests of each credential.
	Logins LoginLimiter
	Tokens TokenLimiter
	// SSO, if set, verifies the identity provider's ID tokens for logins
	// by single sign-on; SSOInfo tells clients where to get them.
	SSO     *oidcauth.Verifier
	SSOInfo *api.SSOInfo
}

// New makes the REST API handler of d.
func New(d Deps) *Handler {
	s := &Handler{store: d.Store, log: d.Logger, ca: d.CA, gate: d.Gate, live: d.Live, out: d.Out, ctl: d.Ctl,
		revoked: d.Revoked, removed: d.Removed, events: d.Events, refusals: sparselog.New(d.Logger, agentsvc.LimitLogInterval),
		applies: make(chan struct{}, maxApplies), maxTokenTTL: d.MaxTokenTTL, imagePolicy: d.ImagePolicy,
		registryAllow: d.RegistryAllow, resolveDigest: d.Resolve, clock: d.Clock,
		sessionTTL: cmp.Or(d.SessionTTL, DefaultSessionTTL), logins: d.Logins, tokens: d.Tokens, sso: d.SSO, auth: api.AuthInfo{SSO: d.SSOInfo}}
	if s.clock == nil {
		s.clock = clockwork.NewRealClock()
	}
	s.mux = s.routes()
	return s
}

// ServeHTTP serves one API request.
func (s *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Routes lists the API's endpoints with who may call each: the one place
// that says so. The authorization matrix test checks every one of them.
func (s *Handler) Routes() []Route {
	r := func(method, path string, access Access, perm string, h func(http.ResponseWriter, *http.Request) error) Route {
		return Route{Method: method, Path: path, Access: access, Perm: perm, h: h}
	}
	const p = "/v1/projects/{project}"
	return []Route{
		r("GET", "/v1/health", Public, "", s.health),
		r("GET", "/v1/auth", Public, "", s.authInfo),
		r("POST", "/v1/login", Public, "", s.login),
		r("POST", "/v1/login/sso", Public, "", s.loginSSO),
		r("DELETE", "/v1/login", Authenticated, "", s.logout),
		r("GET", "/v1/whoami", Authenticated, "", s.whoami),
		r("POST", "/v1/whoami/password", Authenticated, "", s.changeOwnPassword),
		r("POST", "/v1/whoami/certificate", Authenticated, "", s.issueUserCert),

		r("GET", "/v1/nodes", AnyProject, authz.NodesRead, s.listNodes),
		r("GET", "/v1/nodes/{node}", AnyProject, authz.NodesRead, s.getNode),
		r("PATCH", "/v1/nodes/{node}/labels", Fleet, authz.NodesWrite, s.patchNodeLabels),
		r("POST", "/v1/nodes/{node}/revoke", Fleet, authz.NodesDelete, s.revokeNode),
		r("DELETE", "/v1/nodes/{node}", Fleet, authz.NodesDelete, s.deleteNode),
		r("POST", "/v1/nodes/{node}/cordon", Fleet, authz.NodesWrite, s.scheduleNode(api.NodeCordoned, "")),
		r("POST", "/v1/nodes/{node}/drain", Fleet, authz.NodesWrite, s.scheduleNode(api.NodeDraining, "", api.NodeCordoned)),
		r("POST", "/v1/nodes/{node}/uncordon", Fleet, authz.NodesWrite, s.scheduleNode("")),

		r("POST", "/v1/tokens", Fleet, authz.EnrollTokensWrite, s.createToken),
		r("GET", "/v1/tokens", Fleet, authz.EnrollTokensRead, s.listTokens),
		r("DELETE", "/v1/tokens/{id}", Fleet, authz.EnrollTokensWrite, s.revokeToken),

		r("POST", "/v1/apply", AnyProject, authz.DeploymentsWrite, s.apply),
		r("GET", "/v1/projects", AnyProject, authz.ProjectsRead, s.listProjects),
		r("POST", "/v1/projects", Fleet, authz.ProjectsWrite, s.createProject),
		r("GET", p, InProject, authz.ProjectsRead, s.getProject),
		r("DELETE", p, Fleet, authz.ProjectsWrite, s.deleteProject),
		r("GET", p+"/deployments", InProject, authz.DeploymentsRead, s.listDeployments),
		r("GET", p+"/deployments/{name}", InProject, authz.DeploymentsRead, s.getDeployment),
		r("DELETE", p+"/deployments/{name}", InProject, authz.DeploymentsDelete, s.deleteDeployment),
		r("GET", p+"/instances", InProject, authz.InstancesRead, s.listInstances),
		r("GET", p+"/deployments/{name}/revisions", InProject, authz.DeploymentsRead, s.listRevisions),
		r("GET", p+"/deployments/{name}/rollout", InProject, authz.RolloutsRead, s.getRollout),
		r("POST", p+"/deployments/{name}/rollout/undo", InProject, authz.RolloutsWrite, s.undo),
		r("POST", p+"/deployments/{name}/rollout/{action}", InProject, authz.RolloutsWrite, s.rolloutAction),
		r("GET", p+"/events", InProject, authz.EventsRead, s.listEvents),

		r("GET", "/v1/users", Fleet, authz.UsersRead, s.listUsers),
		r("POST", "/v1/users", Fleet, authz.UsersWrite, s.createUser),
		r("GET", "/v1/users/{user}", Fleet, authz.UsersRead, s.getUser),
		r("PATCH", "/v1/users/{user}", Fleet, authz.UsersWrite, s.patchUser),
		r("DELETE", "/v1/users/{user}", Fleet, authz.UsersWrite, s.deleteUser),
		r("GET", "/v1/apitokens", Authenticated, "", s.listAPITokens),
		r("POST", "/v1/apitokens", Authenticated, "", s.createAPIToken),
		r("DELETE", "/v1/apitokens/{id}", Authenticated, "", s.deleteAPIToken),
		r("GET", "/v1/roles", Authenticated, "", s.listRoles),
		r("POST", "/v1/roles", Fleet, authz.RolesWrite, s.putRole(false)),
		r("PUT", "/v1/roles/{role}", Fleet, authz.RolesWrite, s.putRole(true)),
		r("DELETE", "/v1/roles/{role}", Fleet, authz.RolesWrite, s.deleteRole),
		r("GET", "/v1/bindings", Fleet, authz.RolesRead, s.listBindings),
		r("POST", "/v1/bindings", Fleet, authz.RolesWrite, s.createBinding),
		r("DELETE", "/v1/bindings/{id}", Fleet, authz.RolesWrite, s.deleteBinding),
		r("GET", "/v1/audit", Fleet, authz.AuditRead, s.listAudit),
		r("GET", "/v1/audit/verify", Fleet, authz.AuditRead, s.verifyAudit),

		r("POST", "/v1/store/accept-restore", Fleet, authz.StoreWrite, s.acceptRestore),
		r("GET", "/v1/ca", Fleet, authz.CARead, s.getCA),
		r("POST", "/v1/ca/rotate", Fleet, authz.CAWrite, s.rotateCA),
		r("POST", "/v1/ca/finish", Fleet, authz.CAWrite, s.finishCA),
		// Unknown paths are answered after authentication: 401 before 404,
		// so that the API's shape does not show to strangers.
		r("", "/", Authenticated, "", func(w http.ResponseWriter, r *http.Request) error {
			return notFound{fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path)}
		}),
	}
}

func (s *Handler) routes() *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range s.Routes() {
		pattern := strings.TrimSpace(rt.Method + " " + rt.Path)
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { s.serve(rt, w, r) })
	}
	return mux
}

func (s *Handler) health(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

type notFound struct{ msg string }

func (e notFound) Error() string { return e.msg }

// writeError maps an error to its status code; this is the one place that does.
func (s *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		status  = http.StatusInternalServerError
		body    = api.Error{Error: err.Error()}
		br      badRequest
		nf      notFound
		cf      conflict
		bz      busy
		fields  spec.ErrorList
		unauth  unauthorized
		forbid  forbidden
		slow    tooMany
		invalid *store.InvalidError
	)
	switch {
	case errors.As(err, &unauth):
		status = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Bearer realm="dockfleet"`)
	case errors.As(err, &forbid):
		status = http.StatusForbidden
	case errors.As(err, &slow):
		status = http.StatusTooManyRequests
		w.Header().Set("Retry-After", httpguard.RetryAfter(slow.retryAfter))
	case errors.As(err, &invalid):
		status = http.StatusBadRequest
	case errors.Is(err, store.ErrAuditUnavailable):
		status = http.StatusServiceUnavailable
		body.Error = auditUnavailable(err).Error()
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

// visibleNodes returns whether the caller of r sees a node: one who may
// read nodes in every project sees all; one who may in some projects sees
// the nodes their node selectors select.
func (s *Handler) visibleNodes(r *http.Request) (func(api.Node) bool, error) {
	all, mine := principalOf(r.Context()).ProjectsWith(authz.NodesRead)
	if all {
		return func(api.Node) bool { return true }, nil
	}
	var sels []spec.Selector
	for _, name := range mine {
		p, err := s.store.GetProject(r.Context(), name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sels = append(sels, p.NodeSelector)
	}
	return func(n api.Node) bool {
		return slices.ContainsFunc(sels, func(sel spec.Selector) bool { return sel.Matches(n.Labels) })
	}, nil
}

func (s *Handler) listNodes(w http.ResponseWriter, r *http.Request) error {
	visible, err := s.visibleNodes(r)
	if err != nil {
		return err
	}
	nodes, err := s.store.ListNodes(r.Context())
	if err != nil {
		return err
	}
	nodes = slices.DeleteFunc(nodes, func(n api.Node) bool { return !visible(n) })
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
	visible, err := s.visibleNodes(r)
	if err != nil {
		return err
	}
	n, err := s.findNode(r.Context(), r.PathValue("node"))
	if err != nil {
		return err
	}
	if !visible(n) {
		return notFound{fmt.Sprintf("no node with ID or name %q; dockfleet nodes lists them", r.PathValue("node"))}
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
