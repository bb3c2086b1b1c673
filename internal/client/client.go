// Package client is the Go client of dockfleet's REST API (docs/api.md). The
// CLI speaks to the server only through it, and the end-to-end tests use it to
// drive and observe a real server.
//
// Every method returns the internal/api types. A non-2xx answer is an
// *APIError; a server that cannot be reached is an error that names the
// address tried, and a certificate the client does not trust is an error that
// says how to trust it.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/version"
)

// DefaultAddr is the server address used when Config.Addr is empty.
const DefaultAddr = "https://127.0.0.1:7400"

// Config says which server to talk to and how to trust and authenticate to it.
type Config struct {
	// Addr is the server's API base URL, e.g. https://127.0.0.1:7400. A bare
	// host:port means https://host:port; empty means DefaultAddr.
	Addr string
	// Token is the bearer token sent with every request but Health; empty
	// sends none.
	Token string
	// CACertFile is a PEM file of the CA certificates that sign the server's
	// certificate (the server's DATA_DIR/ca.crt).
	CACertFile string
	// CAPEM is PEM-encoded CA certificates, trusted as well as CACertFile's.
	// With neither, the system's certificate pool is used.
	CAPEM []byte
	// ClientCertFile and ClientKeyFile, when set, are a user's client
	// certificate and its key (PEM): the client authenticates with them
	// (mutual TLS) when it sends no Token.
	ClientCertFile, ClientKeyFile string
}

// Client calls one server's REST API. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
	// poll makes long polls: its transport has no header timeout, since the
	// server holds the answer back; each poll's context bounds it instead.
	poll *http.Client
	// headerTimeout is how long hc waits for an answer's headers, and how
	// much longer than its wait a long poll may take.
	headerTimeout time.Duration
}

// New checks cfg and returns a Client. It loads the CA certificates but makes
// no request.
func New(cfg Config) (*Client, error) {
	base, err := parseAddr(cfg.Addr)
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACertFile != "" || len(cfg.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if cfg.CACertFile != "" {
			pem, err := os.ReadFile(cfg.CACertFile)
			if err != nil {
				return nil, fmt.Errorf("reading CA certificate: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("reading CA certificate %s: no PEM certificate in it", cfg.CACertFile)
			}
		}
		if len(cfg.CAPEM) > 0 && !pool.AppendCertsFromPEM(cfg.CAPEM) {
			return nil, errors.New("reading CA certificate: no PEM certificate in the given CA PEM")
		}
		tlsCfg.RootCAs = pool
	}
	if cfg.ClientCertFile != "" || cfg.ClientKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.ClientCertFile, cfg.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the client certificate: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: headerTimeout,
		MaxIdleConnsPerHost:   4,
	}
	pollTr := tr.Clone()
	pollTr.ResponseHeaderTimeout = 0
	return &Client{
		base:          base,
		token:         cfg.Token,
		hc:            &http.Client{Transport: tr},
		poll:          &http.Client{Transport: pollTr},
		headerTimeout: headerTimeout,
	}, nil
}

// headerTimeout bounds the wait for an answer's headers.
const headerTimeout = time.Minute

// CanonicalAddr is addr as a Client made with it reports it (Addr): the
// key of a server's saved login.
func CanonicalAddr(addr string) (string, error) {
	u, err := parseAddr(addr)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

// parseAddr turns a user's --addr into a base URL.
func parseAddr(addr string) (*url.URL, error) {
	if addr == "" {
		addr = DefaultAddr
	}
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("parsing server address %q: %w", addr, err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("server address %q: the API is served over https only", addr)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("server address %q has no host", addr)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("server address %q: want a base URL without query or fragment", addr)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Addr is the base URL the client calls, e.g. https://127.0.0.1:7400.
func (c *Client) Addr() string { return c.base.String() }

// CloseIdleConnections closes the connections the client keeps for reuse.
func (c *Client) CloseIdleConnections() {
	c.hc.CloseIdleConnections()
	c.poll.CloseIdleConnections()
}

// APIError is a non-2xx answer from the server.
type APIError struct {
	StatusCode int
	// Message is the server's "error" field.
	Message string
	// Details lists every problem when there are several; for an invalid
	// spec, one "FILE:LINE: field.path: what is wrong" each.
	Details []string
}

// Error returns the message and, on the following lines, the details.
func (e *APIError) Error() string {
	if len(e.Details) == 0 {
		return e.Message
	}
	return e.Message + "\n" + strings.Join(e.Details, "\n")
}

// IsNotFound reports whether err is the server's 404.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound
}

// IsUnauthorized reports whether err is the server's 401: a missing or
// unknown token.
func IsUnauthorized(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.StatusCode == http.StatusUnauthorized
}

// ConnError is a request that never got an answer: the server could not be
// reached, or its certificate was not trusted.
type ConnError struct {
	// Addr is the server address tried.
	Addr string
	// TLS is set when the TLS handshake failed rather than the connection.
	TLS bool
	Err error
}

func (e *ConnError) Error() string {
	if e.TLS {
		return fmt.Sprintf("cannot verify dockfleet server at %s: %v (trust the server's CA with --ca-cert FILE or DOCKFLEET_CACERT; it is ca.crt in the server's data dir)", e.Addr, e.Err)
	}
	return fmt.Sprintf("cannot reach dockfleet server at %s: %v", e.Addr, e.Err)
}

func (e *ConnError) Unwrap() error { return e.Err }

// Health checks that the server answers GET /v1/health with status ok. It
// needs no token.
func (c *Client) Health(ctx context.Context) error {
	var out struct {
		Status string `json:"status"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/health", nil, nil, "", &out); err != nil {
		return err
	}
	if out.Status != "ok" {
		return fmt.Errorf("server at %s reports status %q", c.Addr(), out.Status)
	}
	return nil
}

// ListNodes returns every node, sorted by name.
func (c *Client) ListNodes(ctx context.Context) ([]api.Node, error) {
	var out []api.Node
	err := c.do(ctx, http.MethodGet, "/v1/nodes", nil, nil, "", &out)
	return nonNil(out), err
}

// GetNode returns one node; node is its ID or its name.
func (c *Client) GetNode(ctx context.Context, node string) (api.Node, error) {
	var out api.Node
	err := c.do(ctx, http.MethodGet, path("v1", "nodes", node), nil, nil, "", &out)
	return out, err
}

// PatchNodeLabels sets and removes a node's labels and returns the node as
// it is after.
func (c *Client) PatchNodeLabels(ctx context.Context, node string, patch api.LabelPatch) (api.Node, error) {
	var out api.Node
	err := c.doJSON(ctx, http.MethodPatch, path("v1", "nodes", node, "labels"), nil, patch, &out)
	return out, err
}

// RevokeNode revokes a node (name or ID): its certificate is refused from
// then on and its connection closed. Revoking it again changes nothing.
func (c *Client) RevokeNode(ctx context.Context, node string) (api.Node, error) {
	var out api.Node
	err := c.do(ctx, http.MethodPost, path("v1", "nodes", node, "revoke"), nil, nil, "", &out)
	return out, err
}

// CordonNode stops placing new instances on a node (name or ID); what it
// runs stays. A draining node stays draining.
func (c *Client) CordonNode(ctx context.Context, node string) (api.Node, error) {
	return c.scheduleNode(ctx, node, "cordon")
}

// DrainNode cordons a node and moves its instances away: replicated ones to
// other nodes, then its global ones stop. The node's Scheduling says drained
// once nothing is left.
func (c *Client) DrainNode(ctx context.Context, node string) (api.Node, error) {
	return c.scheduleNode(ctx, node, "drain")
}

// UncordonNode lets a cordoned or drained node take work again.
func (c *Client) UncordonNode(ctx context.Context, node string) (api.Node, error) {
	return c.scheduleNode(ctx, node, "uncordon")
}

func (c *Client) scheduleNode(ctx context.Context, node, action string) (api.Node, error) {
	var out api.Node
	err := c.do(ctx, http.MethodPost, path("v1", "nodes", node, action), nil, nil, "", &out)
	return out, err
}

// DeleteNode removes a node (name or ID) with its instances and refuses its
// certificate from then on. A connected node is refused with a conflict
// unless force is set.
func (c *Client) DeleteNode(ctx context.Context, node string, force bool) error {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	return c.do(ctx, http.MethodDelete, path("v1", "nodes", node), q, nil, "", nil)
}

// CreateToken makes an enrollment token; the answer is the only one that
// carries its secret (Token).
func (c *Client) CreateToken(ctx context.Context, r api.TokenRequest) (api.EnrollToken, error) {
	var out api.EnrollToken
	err := c.doJSON(ctx, http.MethodPost, "/v1/tokens", nil, r, &out)
	return out, err
}

// ListTokens returns every enrollment token, without secrets.
func (c *Client) ListTokens(ctx context.Context) ([]api.EnrollToken, error) {
	var out []api.EnrollToken
	err := c.do(ctx, http.MethodGet, "/v1/tokens", nil, nil, "", &out)
	return nonNil(out), err
}

// RevokeToken revokes an enrollment token by ID.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, path("v1", "tokens", id), nil, nil, "", nil)
}

// Apply sends a spec file as it is (YAML or JSON). filename names the file in
// the server's error messages; project, when set, is the project of the
// documents that name none (one naming another is an error). An invalid
// file is an *APIError with one detail per problem, and nothing is stored.
func (c *Client) Apply(ctx context.Context, filename, project string, body []byte) (api.ApplyResponse, error) {
	var out api.ApplyResponse
	q := url.Values{}
	if filename != "" {
		q.Set("filename", filename)
	}
	if project != "" {
		q.Set("project", project)
	}
	ctype := "application/yaml"
	if strings.HasSuffix(strings.ToLower(filename), ".json") {
		ctype = "application/json"
	}
	err := c.do(ctx, http.MethodPost, "/v1/apply", q, bytes.NewReader(body), ctype, &out)
	out.Results = nonNil(out.Results)
	return out, err
}

// ListDeployments returns a project's deployments.
func (c *Client) ListDeployments(ctx context.Context, project string) ([]api.Deployment, error) {
	var out []api.Deployment
	err := c.do(ctx, http.MethodGet, path("v1", "projects", project, "deployments"), nil, nil, "", &out)
	return nonNil(out), err
}

// GetDeployment returns a deployment with its instances.
func (c *Client) GetDeployment(ctx context.Context, project, name string) (api.DeploymentStatus, error) {
	var out api.DeploymentStatus
	err := c.do(ctx, http.MethodGet, path("v1", "projects", project, "deployments", name), nil, nil, "", &out)
	out.Instances = nonNil(out.Instances)
	return out, err
}

// DeleteDeployment deletes a deployment; its instances are removed from
// every node.
func (c *Client) DeleteDeployment(ctx context.Context, project, name string) error {
	return c.do(ctx, http.MethodDelete, path("v1", "projects", project, "deployments", name), nil, nil, "", nil)
}

// ListInstances returns a project's instances, only deployment's when
// deployment is not empty.
func (c *Client) ListInstances(ctx context.Context, project, deployment string) ([]api.Instance, error) {
	var out []api.Instance
	q := url.Values{}
	if deployment != "" {
		q.Set("deployment", deployment)
	}
	err := c.do(ctx, http.MethodGet, path("v1", "projects", project, "instances"), q, nil, "", &out)
	return nonNil(out), err
}

// ListRevisions returns a deployment's revisions, oldest first.
func (c *Client) ListRevisions(ctx context.Context, project, name string) ([]api.Revision, error) {
	var out []api.Revision
	err := c.do(ctx, http.MethodGet, path("v1", "projects", project, "deployments", name, "revisions"), nil, nil, "", &out)
	return nonNil(out), err
}

// GetRollout returns a deployment's newest rollout; a deployment that never
// had one is the server's 404 (see IsNotFound).
func (c *Client) GetRollout(ctx context.Context, project, name string) (api.Rollout, error) {
	var out api.Rollout
	err := c.do(ctx, http.MethodGet, path("v1", "projects", project, "deployments", name, "rollout"), nil, nil, "", &out)
	return out, err
}

// Rollout actions, for RolloutAction.
const (
	ActionPause   = "pause"
	ActionResume  = "resume"
	ActionAbort   = "abort"
	ActionPromote = "promote"
)

// RolloutAction pauses, resumes, aborts or promotes a deployment's rollout
// (action is one of the Action constants) and returns the rollout as it is
// after. A rollout not in a state the action applies to is the server's
// 409.
func (c *Client) RolloutAction(ctx context.Context, project, name, action string) (api.Rollout, error) {
	switch action {
	case ActionPause, ActionResume, ActionAbort, ActionPromote:
	default:
		return api.Rollout{}, fmt.Errorf("unknown rollout action %q; want pause, resume, abort or promote", action)
	}
	var out api.Rollout
	err := c.do(ctx, http.MethodPost, path("v1", "projects", project, "deployments", name, "rollout", action), nil, nil, "", &out)
	return out, err
}

// Undo rolls a deployment back to revision toRevision, or with 0 to the
// revision before its stable one: the server makes a new revision, a copy
// of that one, and starts a rollout to it. The result names both.
func (c *Client) Undo(ctx context.Context, project, name string, toRevision int64) (api.ApplyResult, error) {
	var out api.ApplyResult
	err := c.doJSON(ctx, http.MethodPost, path("v1", "projects", project, "deployments", name, "rollout", "undo"), nil,
		api.UndoRequest{ToRevision: toRevision}, &out)
	return out, err
}

// ListEvents returns a project's events with a sequence number above after,
// oldest first, only deployment's when deployment is not empty. The server
// answers at most a page of them; ask again after the last one's Seq for
// more.
//
// With wait above zero it is a long poll: when there is no such event yet,
// the server waits up to wait for the next before it answers (an empty
// list). The request may take that long plus the usual header timeout.
func (c *Client) ListEvents(ctx context.Context, project, deployment string, after int64, wait time.Duration) ([]api.Event, error) {
	q := url.Values{}
	if deployment != "" {
		q.Set("deployment", deployment)
	}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	p := path("v1", "projects", project, "events")
	var out []api.Event
	if wait <= 0 {
		err := c.do(ctx, http.MethodGet, p, q, nil, "", &out)
		return nonNil(out), err
	}
	q.Set("wait", wait.String())
	limit := wait + c.headerTimeout
	pollCtx, cancel := context.WithTimeoutCause(ctx, limit, errPollTimeout)
	defer cancel()
	err := c.send(pollCtx, c.poll, http.MethodGet, p, q, nil, "", &out)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(pollCtx), errPollTimeout) {
		return []api.Event{}, fmt.Errorf("waiting for events from %s: no answer within %s", c.Addr(), limit)
	}
	return nonNil(out), err
}

var errPollTimeout = errors.New("long poll timed out")

// path joins escaped path segments into an absolute path.
func path(segments ...string) string {
	var b strings.Builder
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// nonNil makes an absent list an empty one, so that callers and their JSON
// output see [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (c *Client) doJSON(ctx context.Context, method, p string, q url.Values, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encoding request to %s %s: %w", method, p, err)
	}
	return c.do(ctx, method, p, q, bytes.NewReader(b), "application/json", out)
}

// maxBody bounds what the client reads of an answer.
const maxBody = 64 << 20

// do sends one request and decodes a 2xx answer's JSON into out (unless out
// is nil) or a non-2xx answer into an *APIError.
func (c *Client) do(ctx context.Context, method, p string, q url.Values, body io.Reader, ctype string, out any) error {
	return c.send(ctx, c.hc, method, p, q, body, ctype, out)
}

// send is do through hc.
func (c *Client) send(ctx context.Context, hc *http.Client, method, p string, q url.Values, body io.Reader, ctype string, out any) error {
	// p is escaped already (see path), so it is appended to the escaped base.
	target := c.base.String() + p
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return fmt.Errorf("building request %s %s: %w", method, p, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "dockfleet/"+version.Version)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return c.connError(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("reading answer to %s %s from %s: %w", method, p, c.Addr(), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp, data)
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decoding answer to %s %s from %s: %w", method, p, c.Addr(), err)
	}
	return nil
}

// connError explains a request that got no answer.
func (c *Client) connError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("calling dockfleet server at %s: %w", c.Addr(), ctxErr)
	}
	// Drop url.Error's `Get "https://…/v1/nodes":` prefix: ConnError names
	// the address once, the way a user typed it.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &ConnError{Addr: c.Addr(), TLS: isTLSError(err), Err: err}
}

func isTLSError(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		invalid          x509.CertificateInvalidError
		hostname         x509.HostnameError
		verification     *tls.CertificateVerificationError
		record           tls.RecordHeaderError
	)
	return errors.As(err, &unknownAuthority) || errors.As(err, &invalid) ||
		errors.As(err, &hostname) || errors.As(err, &verification) ||
		errors.As(err, &record)
}

// apiError decodes a non-2xx answer. A body that is not the API's error JSON
// (a proxy's page, say) is quoted, shortened.
func apiError(resp *http.Response, data []byte) error {
	e := &APIError{StatusCode: resp.StatusCode}
	var body api.Error
	if err := json.Unmarshal(data, &body); err == nil && body.Error != "" {
		e.Message = body.Error
		e.Details = body.Details
		return e
	}
	text := strings.TrimSpace(string(data))
	if len(text) > 200 {
		text = text[:200] + "…"
	}
	e.Message = resp.Status
	if text != "" {
		e.Message += ": " + text
	}
	return e
}
