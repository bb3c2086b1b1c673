package restapi

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/audit"
	"github.com/dockfleet/dockfleet/internal/authz"
	"github.com/dockfleet/dockfleet/internal/oidcauth"
	"github.com/dockfleet/dockfleet/internal/passwd"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// Users, logins, API tokens and roles: who may do what.

// Lifetimes of credentials.
const (
	DefaultSessionTTL  = 12 * time.Hour
	DefaultAPITokenTTL = 30 * 24 * time.Hour
	MaxAPITokenTTL     = 365 * 24 * time.Hour
)

// userName is what a user's name may be: a login name or an e-mail
// address, as identity providers give them.
var userName = regexp.MustCompile(`^[a-z0-9][a-z0-9._@+-]{0,127}$`)

func checkUserName(name string) error {
	if !userName.MatchString(name) {
		return badRequestf("user name %q: use 1 to 128 lowercase letters, digits and . _ @ + -, starting with a letter or digit", name)
	}
	return nil
}

// LoginLimiter slows password guessing: it refuses attempts from a source,
// or for a user name, that failed too often lately. It answers the same
// for a user name that does not exist as for one that does.
type LoginLimiter interface {
	AllowLogin(source, user string) (ok bool, retryAfter time.Duration)
	LoginFailed(source, user string)
	LoginSucceeded(source, user string)
}

// TokenLimiter bounds the requests of one credential, by its token ID,
// so that a credential shared by many scripts cannot take the server.
type TokenLimiter interface {
	AllowToken(id string) (ok bool, retryAfter time.Duration)
}

// tooMany is a request refused for coming too often (429).
type tooMany struct {
	msg        string
	retryAfter time.Duration
}

func (e tooMany) Error() string { return e.msg }

// errBadLogin is the one answer to a wrong password, an unknown user, a
// disabled one and one who logs in by SSO only: which it was does not show.
var errBadLogin = unauthorized{"wrong user name or password"}

func (s *Handler) authInfo(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, s.auth)
	return nil
}

func (s *Handler) login(w http.ResponseWriter, r *http.Request) error {
	var req api.LoginRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	entry := store.AuditOf(r.Context())
	entry.SetActor("user:" + req.User)
	entry.SetTarget("", "user:"+req.User)
	src := sourceOf(r)
	if s.logins != nil {
		if ok, wait := s.logins.AllowLogin(src, req.User); !ok {
			return tooMany{fmt.Sprintf("too many failed logins; try again in %s", wait.Round(time.Second)), wait}
		}
	}
	u, hash, err := s.store.GetUser(r.Context(), req.User)
	switch {
	case errors.Is(err, store.ErrNotFound) || err == nil && (u.Disabled || hash == ""):
		passwd.VerifyNone(req.Password)
		err = errBadLogin
	case err == nil && !passwd.Verify(req.Password, hash):
		err = errBadLogin
	}
	if err != nil {
		if s.logins != nil && errors.Is(err, errBadLogin) {
			s.logins.LoginFailed(src, req.User)
		}
		return err
	}
	if s.logins != nil {
		s.logins.LoginSucceeded(src, req.User)
	}
	return s.startSession(w, r, u.Name, nil)
}

// loginSSO logs a user in with an ID token of the identity provider: the
// user is made at its first login, and its groups are the session's, so
// that group bindings apply. A local user of the same name is not taken
// over.
func (s *Handler) loginSSO(w http.ResponseWriter, r *http.Request) error {
	if s.sso == nil {
		return notFound{"single sign-on is not set up on this server (dockfleet server --oidc-issuer and --oidc-client-id)"}
	}
	var req api.SSOLoginRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	entry := store.AuditOf(r.Context())
	entry.SetActor("sso")
	id, err := s.sso.Verify(r.Context(), req.IDToken)
	switch {
	case errors.Is(err, oidcauth.ErrUnavailable):
		return busy{fmt.Sprintf("cannot check the login: %v", err)}
	case err != nil:
		return unauthorized{fmt.Sprintf("the identity provider's token was refused: %v", err)}
	}
	name := strings.ToLower(id.Username)
	entry.SetActor("user:" + name)
	entry.SetTarget("", "user:"+name)
	if err := checkUserName(name); err != nil {
		return unauthorized{fmt.Sprintf("the identity provider's user name %q cannot be a dockfleet user name", id.Username)}
	}
	u, _, err := s.store.GetUser(r.Context(), name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		u = api.User{Name: name, SSO: true, CreatedAt: s.clock.Now().UTC()}
		if err := s.store.CreateUser(r.Context(), u, ""); err != nil && !errors.Is(err, store.ErrExists) {
			return err
		}
		s.log.Info("user created at its first single sign-on", "user", name, "issuer", id.Issuer)
	case err != nil:
		return err
	case !u.SSO:
		return unauthorized{fmt.Sprintf("a local user %s exists: it logs in with its password, not by single sign-on", name)}
	case u.Disabled:
		return errBadLogin
	}
	return s.startSession(w, r, name, id.Groups)
}

// startSession makes a session token for user, with its groups from the
// identity provider, and answers it.
func (s *Handler) startSession(w http.ResponseWriter, r *http.Request, user string, groups []string) error {
	tok, id, hash := pki.NewAPIToken()
	now := s.clock.Now().UTC()
	t := api.APIToken{ID: id, Name: "session", Kind: api.TokenSession, Owner: user, Groups: groups,
		CreatedAt: now, ExpiresAt: now.Add(s.sessionTTL)}
	if err := s.store.CreateAPIToken(r.Context(), t, hash); err != nil {
		return err
	}
	s.log.Info("user logged in", "user", user, "token_id", id, "source", sourceOf(r))
	writeJSON(w, http.StatusOK, api.Login{User: user, Token: tok, TokenID: id, ExpiresAt: t.ExpiresAt})
	return nil
}

func (s *Handler) logout(w http.ResponseWriter, r *http.Request) error {
	t := credentialOf(r.Context())
	if t.Kind != api.TokenSession {
		return badRequestf("logout ends a login session, and this request came with an API token; revoke that with dockfleet apitoken revoke %s", t.ID)
	}
	store.AuditOf(r.Context()).SetTarget("", "token:"+t.ID)
	if err := s.store.DeleteAPIToken(r.Context(), t.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Handler) whoami(w http.ResponseWriter, r *http.Request) error {
	p, t := principalOf(r.Context()), credentialOf(r.Context())
	out := api.Whoami{Kind: p.Kind, Name: p.Name, User: p.User, TokenID: p.TokenID, Grants: []api.Grant{}}
	add := func(role, project string) error {
		perms, err := s.rolePermissions(r.Context(), role)
		if err != nil {
			return err
		}
		out.Grants = append(out.Grants, api.Grant{Role: role, Project: project, Permissions: perms})
		return nil
	}
	if !actsAsUser(t) {
		if err := add(t.Role, t.Project); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	bs, err := s.store.ListBindings(r.Context(), bindingSubjects(t))
	if err != nil {
		return err
	}
	for _, b := range bs {
		if err := add(b.Role, b.Project); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// User client certificates' lifetimes: short, as a certificate cannot be
// revoked but by disabling or deleting its user.
const (
	DefaultUserCertTTL = 30 * 24 * time.Hour
	MaxUserCertTTL     = 90 * 24 * time.Hour
)

// issueUserCert signs an API client certificate of the calling user, for
// a key the client keeps: mutual TLS instead of a bearer token.
func (s *Handler) issueUserCert(w http.ResponseWriter, r *http.Request) error {
	var req api.UserCertificateRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	p := principalOf(r.Context())
	if p.Kind != "user" {
		return badRequestf("a client certificate is issued to a user (logged in, or by its certificate); an API token has none")
	}
	store.AuditOf(r.Context()).SetTarget("", "user:"+p.User)
	ttl := DefaultUserCertTTL
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 || ttl > MaxUserCertTTL {
			return badRequestf("ttl: %q is not a duration up to %s", req.TTL, MaxUserCertTTL)
		}
	}
	pemCert, err := s.ca.SignUser(req.CSR, p.User, ttl)
	if errors.Is(err, pki.ErrBadCSR) {
		return badRequestf("csr: %v", err)
	}
	if err != nil {
		return err
	}
	// Nothing is stored: the certificate acts only while its user exists
	// and is enabled. Its issue is audited before the answer goes out,
	// as every request that changes nothing is.
	writeJSON(w, http.StatusCreated, api.UserCertificate{Certificate: string(pemCert), ExpiresAt: s.clock.Now().Add(ttl).UTC()})
	return nil
}

// changeOwnPassword sets the caller's password, given the current one; it
// ends the user's sessions, this one too.
func (s *Handler) changeOwnPassword(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Current string `json:"current"`
		New     string `json:"new"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	p := principalOf(r.Context())
	if p.Kind != "user" {
		return badRequestf("only a logged-in user changes its own password; an admin sets another's with dockfleet user passwd NAME")
	}
	store.AuditOf(r.Context()).SetTarget("", "user:"+p.User)
	_, hash, err := s.store.GetUser(r.Context(), p.User)
	if err != nil {
		return err
	}
	if hash == "" || !passwd.Verify(req.Current, hash) {
		return forbidden{"the current password is wrong"}
	}
	if err := passwd.Check(req.New); err != nil {
		return badRequestf("new password: %v", err)
	}
	h := passwd.Hash(req.New)
	if _, err := s.store.UpdateUser(r.Context(), p.User, &h, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Handler) listUsers(w http.ResponseWriter, r *http.Request) error {
	us, err := s.store.ListUsers(r.Context())
	if err != nil {
		return err
	}
	writeList(w, us)
	return nil
}

func (s *Handler) createUser(w http.ResponseWriter, r *http.Request) error {
	var req api.UserRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := checkUserName(req.Name); err != nil {
		return err
	}
	store.AuditOf(r.Context()).SetTarget("", "user:"+req.Name)
	if err := passwd.Check(req.Password); err != nil {
		return badRequestf("password: %v", err)
	}
	u := api.User{Name: req.Name, CreatedAt: s.clock.Now().UTC(), Version: 1}
	if err := s.store.CreateUser(r.Context(), u, passwd.Hash(req.Password)); err != nil {
		if errors.Is(err, store.ErrExists) {
			return conflict{fmt.Sprintf("user %s exists already", req.Name)}
		}
		return err
	}
	s.log.Info("user created", "user", u.Name)
	writeJSON(w, http.StatusCreated, u)
	return nil
}

func (s *Handler) getUser(w http.ResponseWriter, r *http.Request) error {
	u, _, err := s.store.GetUser(r.Context(), r.PathValue("user"))
	if errors.Is(err, store.ErrNotFound) {
		return notFound{fmt.Sprintf("no user %q", r.PathValue("user"))}
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

// patchUser sets a user's password, or disables or enables it; either
// ends its sessions.
func (s *Handler) patchUser(w http.ResponseWriter, r *http.Request) error {
	var req api.UserPatch
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	name := r.PathValue("user")
	store.AuditOf(r.Context()).SetTarget("", "user:"+name)
	var hash *string
	if req.Password != nil {
		if err := passwd.Check(*req.Password); err != nil {
			return badRequestf("password: %v", err)
		}
		h := passwd.Hash(*req.Password)
		hash = &h
	}
	if hash == nil && req.Disabled == nil {
		return badRequestf("give a password, or disabled true or false")
	}
	u, err := s.store.UpdateUser(r.Context(), name, hash, req.Disabled)
	if errors.Is(err, store.ErrNotFound) {
		return notFound{fmt.Sprintf("no user %q", name)}
	}
	if err != nil {
		return err
	}
	s.log.Info("user changed", "user", name, "password", hash != nil, "disabled", u.Disabled)
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (s *Handler) deleteUser(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("user")
	store.AuditOf(r.Context()).SetTarget("", "user:"+name)
	if p := principalOf(r.Context()); p.Kind == "user" && p.User == name {
		return conflict{"you cannot delete your own user; another admin can"}
	}
	if err := s.store.DeleteUser(r.Context(), name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound{fmt.Sprintf("no user %q", name)}
		}
		return err
	}
	s.log.Info("user deleted", "user", name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Handler) listAPITokens(w http.ResponseWriter, r *http.Request) error {
	p := principalOf(r.Context())
	all := r.URL.Query().Get("all") == "true"
	if all && !p.CanGlobally(authz.APITokensRead) {
		return forbidden{fmt.Sprintf("%s may not list every user's API tokens: it needs the %s permission in every project", actor(p), authz.APITokensRead)}
	}
	ts, err := s.store.ListAPITokens(r.Context(), "")
	if err != nil {
		return err
	}
	ts = slices.DeleteFunc(ts, func(t api.APIToken) bool { return !all && t.Owner != p.User })
	writeList(w, ts)
	return nil
}

func (s *Handler) createAPIToken(w http.ResponseWriter, r *http.Request) error {
	var req api.APITokenRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	store.AuditOf(r.Context()).SetTarget(strings.TrimPrefix(req.Project, authz.AllProjects), "apitoken:"+req.Name)
	if req.Name == "" || len(req.Name) > 128 {
		return badRequestf("name: give the token a name of 1 to 128 characters, saying what uses it")
	}
	if req.Role == "" {
		return badRequestf("role: give the role the token acts with (dockfleet role list)")
	}
	if req.Project == "" {
		return badRequestf("project: give the project the token acts in, or * for every project")
	}
	ttl := DefaultAPITokenTTL
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			return badRequestf("ttl: %q is not a positive duration (e.g. 720h)", req.TTL)
		}
		if ttl > MaxAPITokenTTL {
			return badRequestf("ttl: %s is longer than an API token may live (%s); make a new one before it expires", req.TTL, MaxAPITokenTTL)
		}
	}
	if err := s.checkGrantable(r, req.Role, req.Project); err != nil {
		return err
	}
	p := principalOf(r.Context())
	tok, id, hash := pki.NewAPIToken()
	now := s.clock.Now().UTC()
	t := api.APIToken{ID: id, Name: req.Name, Kind: api.TokenAPI, Owner: p.User, Role: req.Role, Project: req.Project,
		CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := s.store.CreateAPIToken(r.Context(), t, hash); err != nil {
		return err
	}
	s.log.Info("api token created", "token_id", id, "owner", p.User, "role", t.Role, "project", t.Project, "expires_at", t.ExpiresAt)
	t.Token = tok
	writeJSON(w, http.StatusCreated, t)
	return nil
}

// checkGrantable refuses to let the caller grant role in project (to a
// token or a binding) unless it holds every permission of the role there
// itself: nobody raises their own rights by minting a credential.
func (s *Handler) checkGrantable(r *http.Request, role, project string) error {
	if project != authz.AllProjects {
		if err := s.checkProjectExists(r, project); err != nil {
			return err
		}
	}
	perms, known := authz.Builtin[role]
	if !known {
		cr, err := s.store.GetRole(r.Context(), role)
		if errors.Is(err, store.ErrNotFound) {
			return badRequestf("role %q does not exist; dockfleet role list shows the roles", role)
		}
		if err != nil {
			return err
		}
		perms = cr.Permissions
	}
	if p := principalOf(r.Context()); !p.Covers(perms, project) {
		return forbidden{fmt.Sprintf("%s may not grant role %s in project %s: it does not hold all of that role's permissions there itself", actor(p), role, project)}
	}
	return nil
}

// checkProjectExists refuses a project that does not exist, or that the
// caller cannot see, alike.
func (s *Handler) checkProjectExists(r *http.Request, project string) error {
	if !principalOf(r.Context()).Sees(project) {
		return projectNotFound(project)
	}
	_, err := s.store.GetProject(r.Context(), project)
	if errors.Is(err, store.ErrNotFound) {
		return projectNotFound(project)
	}
	return err
}

func (s *Handler) deleteAPIToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	store.AuditOf(r.Context()).SetTarget("", "token:"+id)
	p := principalOf(r.Context())
	t, _, err := s.store.GetAPIToken(r.Context(), id)
	if err == nil && t.Owner != p.User && !p.CanGlobally(authz.APITokensWrite) {
		err = store.ErrNotFound // another's token is not shown to be there
	}
	if err == nil {
		err = s.store.DeleteAPIToken(r.Context(), id)
	}
	if errors.Is(err, store.ErrNotFound) {
		return notFound{fmt.Sprintf("no API token %q of yours; dockfleet apitoken list shows them", id)}
	}
	if err != nil {
		return err
	}
	s.log.Info("api token revoked", "token_id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Handler) listRoles(w http.ResponseWriter, r *http.Request) error {
	var out []api.Role
	for _, name := range []string{authz.Admin, authz.Operator, authz.Viewer} {
		out = append(out, api.Role{Name: name, Permissions: authz.Builtin[name], Builtin: true})
	}
	custom, err := s.store.ListRoles(r.Context())
	if err != nil {
		return err
	}
	writeList(w, append(out, custom...))
	return nil
}

// putRole creates a custom role, or with update replaces its permissions.
func (s *Handler) putRole(update bool) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var role api.Role
		if err := decodeJSON(r, &role); err != nil {
			return err
		}
		if update {
			if role.Name != "" && role.Name != r.PathValue("role") {
				return badRequestf("name: %q is not the role of the path (%s); a role cannot be renamed", role.Name, r.PathValue("role"))
			}
			role.Name = r.PathValue("role")
		}
		store.AuditOf(r.Context()).SetTarget("", "role:"+role.Name)
		if err := checkRole(role); err != nil {
			return err
		}
		role.CreatedAt = s.clock.Now().UTC()
		err := s.store.PutRole(r.Context(), role, update)
		switch {
		case errors.Is(err, store.ErrExists):
			return conflict{fmt.Sprintf("role %s exists already; change it with dockfleet role update", role.Name)}
		case errors.Is(err, store.ErrNotFound):
			return notFound{fmt.Sprintf("no custom role %q", role.Name)}
		case err != nil:
			return err
		}
		status := http.StatusCreated
		if update {
			status = http.StatusOK
		}
		writeJSON(w, status, role)
		return nil
	}
}

// checkRole says what is wrong with a custom role.
func checkRole(r api.Role) error {
	if err := checkUserName(r.Name); err != nil {
		return badRequestf("role name %q: use lowercase letters, digits and . _ -", r.Name)
	}
	if _, ok := authz.Builtin[r.Name]; ok {
		return badRequestf("role %s is built in and cannot be changed; make a role of another name", r.Name)
	}
	if len(r.Permissions) == 0 {
		return badRequestf("permissions: a role grants at least one permission, such as %s", authz.DeploymentsRead)
	}
	var problems []string
	for _, p := range r.Permissions {
		if err := authz.ValidatePermission(p); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return badRequestf("permissions: %s", strings.Join(problems, "; "))
	}
	return nil
}

func (s *Handler) deleteRole(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("role")
	store.AuditOf(r.Context()).SetTarget("", "role:"+name)
	if _, ok := authz.Builtin[name]; ok {
		return badRequestf("role %s is built in and cannot be deleted", name)
	}
	err := s.store.DeleteRole(r.Context(), name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound{fmt.Sprintf("no custom role %q", name)}
	case errors.Is(err, store.ErrConflict):
		return conflict{strings.TrimSuffix(err.Error(), ": "+store.ErrConflict.Error())}
	case err != nil:
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Handler) listBindings(w http.ResponseWriter, r *http.Request) error {
	bs, err := s.store.ListBindings(r.Context(), nil)
	if err != nil {
		return err
	}
	writeList(w, bs)
	return nil
}

func (s *Handler) createBinding(w http.ResponseWriter, r *http.Request) error {
	var b api.Binding
	if err := decodeJSON(r, &b); err != nil {
		return err
	}
	store.AuditOf(r.Context()).SetTarget(strings.TrimPrefix(b.Project, authz.AllProjects), b.Subject)
	kind, name, _ := strings.Cut(b.Subject, ":")
	switch kind {
	case "user":
		if err := checkUserName(name); err != nil {
			return err
		}
		if _, _, err := s.store.GetUser(r.Context(), name); errors.Is(err, store.ErrNotFound) {
			return badRequestf("subject: no user %q (an SSO user appears at its first login; bind its group meanwhile)", name)
		} else if err != nil {
			return err
		}
	case "group":
		if name == "" || len(name) > 256 {
			return badRequestf("subject: a group name has 1 to 256 characters")
		}
	default:
		return badRequestf("subject: %q is neither user:NAME nor group:NAME", b.Subject)
	}
	if b.Role == "" || b.Project == "" {
		return badRequestf("give the role and the project (or * for every project) of the binding")
	}
	if err := s.checkGrantable(r, b.Role, b.Project); err != nil {
		return err
	}
	b.ID, b.CreatedAt = pki.NewTokenID(), s.clock.Now().UTC()
	if err := s.store.CreateBinding(r.Context(), b); err != nil {
		if errors.Is(err, store.ErrExists) {
			return conflict{strings.TrimSuffix(err.Error(), ": "+store.ErrExists.Error())}
		}
		return err
	}
	s.log.Info("role bound", "subject", b.Subject, "role", b.Role, "project", b.Project)
	writeJSON(w, http.StatusCreated, b)
	return nil
}

func (s *Handler) deleteBinding(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	store.AuditOf(r.Context()).SetTarget("", "binding:"+id)
	if err := s.store.DeleteBinding(r.Context(), id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound{fmt.Sprintf("no binding %q; dockfleet binding list shows them", id)}
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Handler) listProjects(w http.ResponseWriter, r *http.Request) error {
	ps, err := s.store.ListProjects(r.Context())
	if err != nil {
		return err
	}
	all, mine := principalOf(r.Context()).ProjectsWith(authz.ProjectsRead)
	ps = slices.DeleteFunc(ps, func(p api.Project) bool { return !all && !slices.Contains(mine, p.Name) })
	writeList(w, ps)
	return nil
}

func (s *Handler) createProject(w http.ResponseWriter, r *http.Request) error {
	var p api.Project
	if err := decodeJSON(r, &p); err != nil {
		return err
	}
	store.AuditOf(r.Context()).SetTarget(p.Name, "project:"+p.Name)
	if err := validateProject(p); err != nil {
		return err
	}
	p.CreatedAt = s.clock.Now().UTC()
	if err := s.store.CreateProject(r.Context(), p); err != nil {
		if errors.Is(err, store.ErrExists) {
			return conflict{fmt.Sprintf("project %s exists already", p.Name)}
		}
		return err
	}
	s.log.Info("project created", "project", p.Name)
	writeJSON(w, http.StatusCreated, p)
	return nil
}

// validateProject says what is wrong with a new project.
func validateProject(p api.Project) error {
	if err := spec.ValidateName("name", p.Name); err != nil {
		return badRequestf("%v", err)
	}
	if err := spec.ValidateSelector("nodeSelector", p.NodeSelector); err != nil {
		return badRequestf("%v", err)
	}
	return nil
}

func (s *Handler) getProject(w http.ResponseWriter, r *http.Request) error {
	p, err := s.store.GetProject(r.Context(), r.PathValue("project"))
	if errors.Is(err, store.ErrNotFound) {
		return projectNotFound(r.PathValue("project"))
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, p)
	return nil
}

func (s *Handler) deleteProject(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("project")
	if name == api.DefaultProject {
		return badRequestf("the default project cannot be deleted")
	}
	err := s.store.DeleteProject(r.Context(), name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return projectNotFound(name)
	case errors.Is(err, store.ErrConflict):
		return conflict{strings.TrimSuffix(err.Error(), ": "+store.ErrConflict.Error())}
	case err != nil:
		return err
	}
	s.log.Info("project deleted", "project", name)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// auditPage bounds the records one GET /v1/audit returns; ?after= pages on.
const auditPage = 1000

func (s *Handler) listAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := store.AuditFilter{Actor: q.Get("user"), Limit: auditPage}
	if v := q.Get("since"); v != "" {
		t, err := parseSince(v, s.clock.Now())
		if err != nil {
			return err
		}
		f.Since = t
	}
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return badRequestf("after: %q is not a record number", v)
		}
		f.AfterSeq = n
	}
	recs, err := s.store.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	writeList(w, recs)
	return nil
}

// parseSince reads a time as RFC 3339 or as a duration before now.
func parseSince(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	return time.Time{}, badRequestf("since: %q is neither a duration (1h) nor a time (2026-12-07T10:00:00Z)", v)
}

// verifyAudit walks the whole log, page by page, checking the chain.
func (s *Handler) verifyAudit(w http.ResponseWriter, r *http.Request) error {
	// The head is read first: records written during the walk come after
	// it, and the walk stops there.
	head, err := s.store.AuditHead(r.Context())
	if err != nil {
		return err
	}
	var v audit.Verifier
	for after := int64(0); after < head.Seq; {
		recs, err := s.store.ListAudit(r.Context(), store.AuditFilter{AfterSeq: after, Limit: auditPage})
		if err != nil {
			return err
		}
		for _, rec := range recs {
			if rec.Seq > head.Seq {
				break
			}
			v.Add(rec)
		}
		if len(recs) < auditPage {
			break
		}
		after = recs[len(recs)-1].Seq
	}
	n, problems := v.Done(head)
	writeJSON(w, http.StatusOK, api.AuditVerify{Records: n, OK: len(problems) == 0, Problems: problems})
	return nil
}
