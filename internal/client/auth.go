package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
)

// AuthInfo says how to log in to the server; it needs no credential.
func (c *Client) AuthInfo(ctx context.Context) (api.AuthInfo, error) {
	var out api.AuthInfo
	err := c.do(ctx, http.MethodGet, "/v1/auth", nil, nil, "", &out)
	return out, err
}

// Login logs a user in with a password and returns its session token.
func (c *Client) Login(ctx context.Context, user, password string) (api.Login, error) {
	var out api.Login
	err := c.doJSON(ctx, http.MethodPost, "/v1/login", nil, api.LoginRequest{User: user, Password: password}, &out)
	return out, err
}

// LoginSSO logs in with an ID token of the server's identity provider and
// returns the session token.
func (c *Client) LoginSSO(ctx context.Context, idToken string) (api.Login, error) {
	var out api.Login
	err := c.doJSON(ctx, http.MethodPost, "/v1/login/sso", nil, api.SSOLoginRequest{IDToken: idToken}, &out)
	return out, err
}

// Logout ends the session the client's token is.
func (c *Client) Logout(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "/v1/login", nil, nil, "", nil)
}

// Whoami returns the caller and its grants.
func (c *Client) Whoami(ctx context.Context) (api.Whoami, error) {
	var out api.Whoami
	err := c.do(ctx, http.MethodGet, "/v1/whoami", nil, nil, "", &out)
	return out, err
}

// ChangePassword sets the logged-in user's password; its sessions end.
func (c *Client) ChangePassword(ctx context.Context, current, neu string) error {
	return c.doJSON(ctx, http.MethodPost, "/v1/whoami/password", nil, map[string]string{"current": current, "new": neu}, nil)
}

// ListUsers returns the users.
func (c *Client) ListUsers(ctx context.Context) ([]api.User, error) {
	var out []api.User
	err := c.do(ctx, http.MethodGet, "/v1/users", nil, nil, "", &out)
	return nonNil(out), err
}

// CreateUser makes a local user.
func (c *Client) CreateUser(ctx context.Context, name, password string) (api.User, error) {
	var out api.User
	err := c.doJSON(ctx, http.MethodPost, "/v1/users", nil, api.UserRequest{Name: name, Password: password}, &out)
	return out, err
}

// PatchUser sets a user's password or disables or enables it.
func (c *Client) PatchUser(ctx context.Context, name string, p api.UserPatch) (api.User, error) {
	var out api.User
	err := c.doJSON(ctx, http.MethodPatch, path("v1", "users", name), nil, p, &out)
	return out, err
}

// DeleteUser deletes a user with its tokens and bindings.
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, path("v1", "users", name), nil, nil, "", nil)
}

// ListAPITokens returns the caller's tokens, or every user's with all.
func (c *Client) ListAPITokens(ctx context.Context, all bool) ([]api.APIToken, error) {
	var out []api.APIToken
	q := url.Values{}
	if all {
		q.Set("all", "true")
	}
	err := c.do(ctx, http.MethodGet, "/v1/apitokens", q, nil, "", &out)
	return nonNil(out), err
}

// CreateAPIToken makes an API token; the answer holds its secret, once.
func (c *Client) CreateAPIToken(ctx context.Context, r api.APITokenRequest) (api.APIToken, error) {
	var out api.APIToken
	err := c.doJSON(ctx, http.MethodPost, "/v1/apitokens", nil, r, &out)
	return out, err
}

// RevokeAPIToken deletes an API token.
func (c *Client) RevokeAPIToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, path("v1", "apitokens", id), nil, nil, "", nil)
}

// ListRoles returns the built-in and custom roles.
func (c *Client) ListRoles(ctx context.Context) ([]api.Role, error) {
	var out []api.Role
	err := c.do(ctx, http.MethodGet, "/v1/roles", nil, nil, "", &out)
	return nonNil(out), err
}

// PutRole creates a custom role, or with update replaces its permissions.
func (c *Client) PutRole(ctx context.Context, r api.Role, update bool) (api.Role, error) {
	var out api.Role
	method, p := http.MethodPost, "/v1/roles"
	if update {
		method, p = http.MethodPut, path("v1", "roles", r.Name)
	}
	err := c.doJSON(ctx, method, p, nil, r, &out)
	return out, err
}

// DeleteRole deletes a custom role no binding or token holds.
func (c *Client) DeleteRole(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, path("v1", "roles", name), nil, nil, "", nil)
}

// ListBindings returns every binding.
func (c *Client) ListBindings(ctx context.Context) ([]api.Binding, error) {
	var out []api.Binding
	err := c.do(ctx, http.MethodGet, "/v1/bindings", nil, nil, "", &out)
	return nonNil(out), err
}

// CreateBinding gives a user or group a role in a project ("*": all).
func (c *Client) CreateBinding(ctx context.Context, b api.Binding) (api.Binding, error) {
	var out api.Binding
	err := c.doJSON(ctx, http.MethodPost, "/v1/bindings", nil, b, &out)
	return out, err
}

// DeleteBinding deletes a binding.
func (c *Client) DeleteBinding(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, path("v1", "bindings", id), nil, nil, "", nil)
}

// ListProjects returns the projects the caller sees.
func (c *Client) ListProjects(ctx context.Context) ([]api.Project, error) {
	var out []api.Project
	err := c.do(ctx, http.MethodGet, "/v1/projects", nil, nil, "", &out)
	return nonNil(out), err
}

// CreateProject makes a project.
func (c *Client) CreateProject(ctx context.Context, p api.Project) (api.Project, error) {
	var out api.Project
	err := c.doJSON(ctx, http.MethodPost, "/v1/projects", nil, p, &out)
	return out, err
}

// DeleteProject deletes a project that holds no deployment.
func (c *Client) DeleteProject(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, path("v1", "projects", name), nil, nil, "", nil)
}

// AuditFilter selects audit records; zero fields select all.
type AuditFilter struct {
	Since time.Time
	User  string
	After int64
}

// ListAudit returns a page of audit records after f.After, oldest first.
func (c *Client) ListAudit(ctx context.Context, f AuditFilter) ([]api.AuditRecord, error) {
	var out []api.AuditRecord
	q := url.Values{}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if f.User != "" {
		q.Set("user", f.User)
	}
	if f.After > 0 {
		q.Set("after", strconv.FormatInt(f.After, 10))
	}
	err := c.do(ctx, http.MethodGet, "/v1/audit", q, nil, "", &out)
	return nonNil(out), err
}

// VerifyAudit checks the audit log's hash chain on the server.
func (c *Client) VerifyAudit(ctx context.Context) (api.AuditVerify, error) {
	var out api.AuditVerify
	err := c.do(ctx, http.MethodGet, "/v1/audit/verify", nil, nil, "", &out)
	return out, err
}

// IssueUserCertificate asks for an API client certificate of the calling
// user for the key of the DER CSR csr, valid for ttl ("" for the default).
func (c *Client) IssueUserCertificate(ctx context.Context, csr []byte, ttl string) (api.UserCertificate, error) {
	var out api.UserCertificate
	err := c.doJSON(ctx, http.MethodPost, "/v1/whoami/certificate", nil, api.UserCertificateRequest{CSR: csr, TTL: ttl}, &out)
	return out, err
}
