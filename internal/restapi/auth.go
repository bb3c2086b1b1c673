package restapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/authz"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/store"
)

// unauthorized is a request without a valid credential (401). Its message
// says what to do; which check failed is told only where that helps the
// credential's holder and nobody else (an expired token's holder learns it
// expired, since only the holder can present its secret).
type unauthorized struct{ msg string }

func (e unauthorized) Error() string { return e.msg }

var errNoCredential = unauthorized{"missing or invalid credential: log in with dockfleet login, or pass an API token with --token or DOCKFLEET_TOKEN"}

// forbidden is a caller who may not do what it asked (403).
type forbidden struct{ msg string }

func (e forbidden) Error() string { return e.msg }

// Access says who may call an endpoint.
type Access int

// Endpoint access kinds.
const (
	// Public endpoints take no credential: health, login, how to log in.
	Public Access = iota
	// Authenticated endpoints take any caller; the handler decides the rest
	// (the caller's own tokens, logging out).
	Authenticated
	// Fleet endpoints need Perm in every project: they act on what all
	// projects share (nodes, enrollment, users, roles).
	Fleet
	// InProject endpoints need Perm in the path's {project}. A project
	// the caller holds nothing in is answered as not found.
	InProject
	// AnyProject endpoints need Perm in some project; the handler narrows
	// the answer, or the documents applied, to the caller's projects.
	AnyProject
)

// Route is one endpoint of the API and who may call it.
type Route struct {
	Method, Path string
	Access       Access
	Perm         string
	h            func(w http.ResponseWriter, r *http.Request) error
}

type principalKey struct{}

// principalOf returns the caller of an authenticated request.
func principalOf(ctx context.Context) *authz.Principal {
	p, _ := ctx.Value(principalKey{}).(*authz.Principal)
	return p
}

// credential is what a request's bearer token resolved to.
type credential struct {
	p   *authz.Principal
	tok api.APIToken
}

// authenticate resolves the request's bearer token to its principal.
func (s *Handler) authenticate(r *http.Request) (credential, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if user, err := pki.PeerUser(r.TLS); err == nil {
			t := api.APIToken{ID: "cert:" + r.TLS.VerifiedChains[0][0].SerialNumber.String(), Kind: api.TokenCertificate, Owner: user}
			p, err := s.principalOf(r.Context(), t)
			return credential{p: p, tok: t}, err
		}
	}
	raw, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || raw == "" {
		return credential{}, errNoCredential
	}
	id, secret, err := pki.ParseAPIToken(strings.TrimSpace(raw))
	if err != nil {
		return credential{}, errNoCredential
	}
	ctx := r.Context()
	t, hash, err := s.store.GetAPIToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return credential{}, errNoCredential
	}
	if err != nil {
		return credential{}, err
	}
	if !pki.SecretMatches(secret, hash) {
		return credential{}, errNoCredential
	}
	if !t.ExpiresAt.IsZero() && !s.clock.Now().Before(t.ExpiresAt) {
		switch t.Kind {
		case api.TokenSession:
			return credential{}, unauthorized{"your session expired: log in again with dockfleet login"}
		case api.TokenBootstrap:
			return credential{}, unauthorized{"the bootstrap admin token was revoked: log in with dockfleet login"}
		}
		return credential{}, unauthorized{fmt.Sprintf("API token %s expired at %s: make another with dockfleet apitoken create", t.ID, t.ExpiresAt.Format(time.RFC3339))}
	}
	p, err := s.principalOf(ctx, t)
	return credential{p: p, tok: t}, err
}

// principalOf resolves token t to the principal it acts as: a session acts
// as its user, with the user's and its groups' bindings; an API token holds
// its one binding. A disabled or deleted user's credentials are refused.
func (s *Handler) principalOf(ctx context.Context, t api.APIToken) (*authz.Principal, error) {
	if t.Owner != "" {
		u, _, err := s.store.GetUser(ctx, t.Owner)
		if errors.Is(err, store.ErrNotFound) || err == nil && u.Disabled {
			return nil, unauthorized{fmt.Sprintf("user %s is disabled or was deleted: its sessions and tokens are refused", t.Owner)}
		}
		if err != nil {
			return nil, err
		}
	}
	if !actsAsUser(t) {
		perms, err := s.rolePermissions(ctx, t.Role)
		if err != nil {
			return nil, err
		}
		return &authz.Principal{Kind: "token", Name: "token:" + t.ID, User: t.Owner, TokenID: t.ID,
			Grants: []authz.Grant{{Project: t.Project, Permissions: perms}}}, nil
	}
	p := &authz.Principal{Kind: "user", Name: t.Owner, User: t.Owner, TokenID: t.ID}
	bs, err := s.store.ListBindings(ctx, bindingSubjects(t))
	if err != nil {
		return nil, err
	}
	for _, b := range bs {
		perms, err := s.rolePermissions(ctx, b.Role)
		if err != nil {
			return nil, err
		}
		p.Grants = append(p.Grants, authz.Grant{Project: b.Project, Permissions: perms})
	}
	return p, nil
}

// bindingSubjects are the binding subjects a credential acting as its
// user holds: the user's, and its groups' from the identity provider.
func bindingSubjects(t api.APIToken) []string {
	subjects := []string{"user:" + t.Owner}
	for _, g := range t.Groups {
		subjects = append(subjects, "group:"+g)
	}
	return subjects
}

// actsAsUser reports whether credential t acts as its user, with the
// user's bindings: a login session or a client certificate; an API token
// acts with its own binding alone.
func actsAsUser(t api.APIToken) bool {
	return t.Kind == api.TokenSession || t.Kind == api.TokenCertificate
}

// rolePermissions returns what role grants; a role deleted since it was
// bound grants nothing.
func (s *Handler) rolePermissions(ctx context.Context, role string) ([]string, error) {
	if perms, ok := authz.Builtin[role]; ok {
		return perms, nil
	}
	r, err := s.store.GetRole(ctx, role)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return r.Permissions, err
}

// actor names a principal in the audit log.
func actor(p *authz.Principal) string {
	switch {
	case p.Kind == "user":
		return "user:" + p.User
	case p.User != "":
		return p.Name + " (" + p.User + ")"
	default:
		return p.Name + " (bootstrap)"
	}
}

// authorize checks that p may call route rt with request r.
func authorize(rt Route, p *authz.Principal, r *http.Request) error {
	switch rt.Access {
	case Fleet:
		if !p.CanGlobally(rt.Perm) {
			return forbidden{fmt.Sprintf("%s may not %s %s: it needs the %s permission in every project", actor(p), r.Method, r.URL.Path, rt.Perm)}
		}
	case InProject:
		project := r.PathValue("project")
		if !p.Sees(project) {
			return projectNotFound(project)
		}
		if !p.Can(rt.Perm, project) {
			return forbidden{fmt.Sprintf("%s may not %s %s: it needs the %s permission in project %s", actor(p), r.Method, r.URL.Path, rt.Perm, project)}
		}
	case AnyProject:
		if all, projects := p.ProjectsWith(rt.Perm); !all && len(projects) == 0 {
			return forbidden{fmt.Sprintf("%s may not %s %s: it needs the %s permission in some project", actor(p), r.Method, r.URL.Path, rt.Perm)}
		}
	}
	return nil
}

// projectNotFound is the answer about a project the caller cannot see,
// and about one that does not exist: the same, so that another tenant's
// projects do not show.
func projectNotFound(project string) error {
	return notFound{fmt.Sprintf("project %q not found (or not yours): dockfleet project list shows yours", project)}
}

// mutating reports whether a request can change something.
func mutating(r *http.Request) bool {
	return !slices.Contains([]string{http.MethodGet, http.MethodHead, http.MethodOptions}, r.Method)
}

// serve runs one request of route rt: it authenticates the caller,
// starts the audit record of a request that can change something,
// authorizes, and calls the handler.
func (s *Handler) serve(rt Route, w http.ResponseWriter, r *http.Request) {
	reqID := newRequestID()
	w.Header().Set("X-Request-Id", reqID)
	var entry *store.AuditEntry
	if mutating(r) {
		entry = store.NewAuditEntry(api.AuditRecord{Action: rt.Method + " " + rt.Path, Target: r.URL.Path,
			Project: r.PathValue("project"), Source: sourceOf(r), RequestID: reqID})
		r = r.WithContext(store.WithAudit(r.Context(), entry))
		aw := &auditWriter{ResponseWriter: w, s: s, r: r, entry: entry}
		w = aw
		defer aw.finish()
	}
	err := s.authorized(rt, r, reqID, entry, func(r *http.Request) error { return rt.h(w, r) })
	if err != nil {
		s.writeError(w, r, err)
	}
}

// authorized authenticates the caller of r and checks it may call rt,
// then calls next with the caller in the request's context. A credential
// presented and refused is audited, whatever the method.
func (s *Handler) authorized(rt Route, r *http.Request, reqID string, entry *store.AuditEntry, next func(*http.Request) error) error {
	if rt.Access == Public {
		return next(r)
	}
	c, err := s.authenticate(r)
	if err != nil {
		var u unauthorized
		if errors.As(err, &u) && r.Header.Get("Authorization") != "" && entry == nil {
			// A read with a bad credential changes nothing, but it is a
			// credential refused: audited as a mutating request would be.
			if aerr := s.store.AppendAudit(r.Context(), api.AuditRecord{Actor: "unauthenticated", Action: rt.Method + " " + rt.Path,
				Target: r.URL.Path, Source: sourceOf(r), Result: "401 " + u.msg, RequestID: reqID}); aerr != nil {
				return auditUnavailable(aerr)
			}
		}
		if entry != nil {
			entry.SetActor("unauthenticated")
		}
		return err
	}
	if entry != nil {
		entry.SetActor(actor(c.p))
	}
	if s.tokens != nil {
		if ok, wait := s.tokens.AllowToken(c.tok.ID); !ok {
			return tooMany{"too many requests with this credential; slow down", wait}
		}
	}
	ctx := context.WithValue(r.Context(), principalKey{}, c.p)
	ctx = context.WithValue(ctx, credentialKey{}, c.tok)
	r = r.WithContext(ctx)
	if err := authorize(rt, c.p, r); err != nil {
		return err
	}
	return next(r)
}

type credentialKey struct{}

// credentialOf returns the token an authenticated request came with.
func credentialOf(ctx context.Context) api.APIToken {
	t, _ := ctx.Value(credentialKey{}).(api.APIToken)
	return t
}

func newRequestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sourceOf is the address a request came from.
func sourceOf(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// auditUnavailable is the answer to a request whose audit record could
// not be written: it failed, and changed nothing.
func auditUnavailable(err error) error {
	return busy{fmt.Sprintf("the audit log cannot be written, so nothing was changed: %v", err)}
}

// auditWriter holds a mutating request's answer until its audit record is
// written. A request that committed a change wrote the record with it; one
// that did not (refused, failed, or nothing to change) gets a record of its
// own before the answer goes out, and if that cannot be written the answer
// becomes 503: no request is acknowledged that the log does not show.
type auditWriter struct {
	http.ResponseWriter
	s       *Handler
	r       *http.Request
	entry   *store.AuditEntry
	decided bool
	dropped bool // the handler's answer, replaced by a 503
}

func (w *auditWriter) WriteHeader(status int) {
	if w.decided {
		return
	}
	w.decided = true
	if w.entry.Committed() == 0 {
		result := "ok (nothing changed)"
		if status >= 300 {
			result = fmt.Sprintf("%d %s", status, strings.ToLower(http.StatusText(status)))
		}
		if err := w.s.store.AppendAudit(w.r.Context(), w.entry.Record(result)); err != nil {
			w.dropped = true
			w.s.log.Error("audit log write failed; request refused", "method", w.r.Method, "path", w.r.URL.Path, "err", err)
			w.ResponseWriter.Header().Del("Content-Length")
			writeJSON(w.ResponseWriter, http.StatusServiceUnavailable, api.Error{Error: auditUnavailable(err).Error()})
			return
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *auditWriter) Write(b []byte) (int, error) {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	if w.dropped {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *auditWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish writes the record of a request whose handler wrote no answer.
func (w *auditWriter) finish() {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
}
