package server

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/pki/pkitest"
	"github.com/dockfleet/dockfleet/internal/sim"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// The node identity tests enroll and connect raw agents from nodeSource,
// through the real server (SQLite, TLS, gRPC) that startAbuseFleet runs.
const nodeSource = "127.0.0.3"

// callTimeout bounds one call of a test to the agent endpoint.
const callTimeout = 20 * time.Second

// enrollAs enrolls node name with token tok, asking for labels, with csr.
func (f *abuseFleet) enrollAs(t *testing.T, tok, name string, labels map[string]string, csr []byte) (*agentproto.EnrollResponse, error) {
	t.Helper()
	fp, _, _, err := pki.ParseEnrollToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	conn := f.conn(t, nodeSource, credentials.NewTLS(pki.EnrollClientTLS(fp, f.host)))
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	return agentproto.NewAgentClient(conn).Enroll(ctx, &agentproto.EnrollRequest{
		ProtocolVersion: agentproto.Version, Token: tok, Csr: csr, Name: name, Labels: labels})
}

// identity enrolls node name with token tok and labels and returns its identity.
func (f *abuseFleet) identity(t *testing.T, tok, name string, labels map[string]string) *pki.Identity {
	t.Helper()
	key, csr := pkitest.NodeCSR(t)
	resp, err := f.enrollAs(t, tok, name, labels, csr)
	if err != nil {
		t.Fatalf("enrolling %s: %v", name, err)
	}
	id, err := pki.SaveIdentity(t.TempDir(), key, resp.Certificate, resp.CaCertificate)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (f *abuseFleet) creds(id *pki.Identity) credentials.TransportCredentials {
	return credentials.NewTLS(pki.AgentClientTLS(id, f.host))
}

// connectAs opens a stream as the node of id, on a new connection.
func (f *abuseFleet) connectAs(t *testing.T, id *pki.Identity) (agentproto.Agent_ConnectClient, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return openStream(ctx, f.conn(t, nodeSource, f.creds(id)))
}

// renewAs asks for a certificate for a brand-new key, as the node of id.
func (f *abuseFleet) renewAs(t *testing.T, id *pki.Identity) error {
	t.Helper()
	_, csr := pkitest.NodeCSR(t)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	_, err := agentproto.NewAgentClient(f.conn(t, nodeSource, f.creds(id))).Renew(ctx, &agentproto.RenewRequest{Csr: csr})
	return err
}

// streamEnded waits up to within for stream to end.
func streamEnded(t *testing.T, stream agentproto.Agent_ConnectClient, within time.Duration, what string) {
	t.Helper()
	ended := make(chan error, 1)
	go func() { ended <- recvUntilError(stream) }()
	select {
	case <-ended:
	case <-time.After(within):
		t.Fatalf("the node's stream was still open %s after %s", within, what)
	}
}

func (f *abuseFleet) newToken(t *testing.T, req api.TokenRequest) string {
	t.Helper()
	tok, err := f.api.CreateToken(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// Review finding 2: revoking a node closes its stream at once, and its
// certificate no longer connects or renews.
func TestRevokeClosesStreamAndRefusesNode(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	id := f.identity(t, f.token, "victim", nil)
	stream, err := f.connectAs(t, id)
	if err != nil {
		t.Fatal(err)
	}
	n, err := f.api.RevokeNode(ctx, "victim")
	if err != nil {
		t.Fatal(err)
	}
	if n.State != api.NodeRevoked {
		t.Errorf("revoked node's state = %s; want revoked", n.State)
	}
	streamEnded(t, stream, time.Second, "the revoke")

	if _, err := f.connectAs(t, id); err == nil {
		t.Error("a revoked node connected again")
	}
	if err := f.renewAs(t, id); err == nil {
		t.Error("a revoked node renewed its certificate with a new key")
	}
	if n, err := f.api.RevokeNode(ctx, n.ID); err != nil || n.State != api.NodeRevoked {
		t.Errorf("revoking again = %s, %v; want revoked, no error", n.State, err)
	}
	nodes, err := f.api.ListNodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].State != api.NodeRevoked {
		t.Errorf("nodes = %+v, %v; want victim, revoked", nodes, err)
	}
}

// The instances of a revoked node are those of a lost node: a replicated
// one moves to another node at once.
func TestRevokedNodesInstancesMove(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	r := f.runSim(t, sim.Config{Agents: 2, NamePrefix: "pool", Labels: map[string]string{"role": "pool"}, SourceIPs: []string{goodSource}})
	f.waitReady(t, r, "pool-", 2)
	doc := "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: one}\n" +
		"spec:\n  mode: replicated\n  replicas: 1\n  selector: {matchLabels: {role: pool}}\n  container: {image: hello:v1}\n"
	if _, err := f.api.Apply(ctx, "one.yaml", "", []byte(doc)); err != nil {
		t.Fatal(err)
	}
	on := func() []string {
		t.Helper()
		ins, err := f.api.ListInstances(ctx, api.DefaultProject, "one")
		if err != nil {
			t.Fatal(err)
		}
		var nodes []string
		for _, in := range ins {
			nodes = append(nodes, in.NodeName)
		}
		return nodes
	}
	var first string
	testenv.Eventually(t, 30*time.Second, "the instance to be placed", func() error {
		nodes := on()
		if len(nodes) != 1 {
			return fmt.Errorf("instances on %v", nodes)
		}
		first = nodes[0]
		return nil
	})
	if _, err := f.api.RevokeNode(ctx, first); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the instance to leave the revoked node "+first, func() error {
		if nodes := on(); len(nodes) != 1 || nodes[0] == first {
			return fmt.Errorf("instances on %v", nodes)
		}
		return nil
	})
}

// Review finding 2: a node is removed only when its agent is not connected,
// or by force; the certificate of a removed node, stolen, renews nothing.
func TestRemoveNode(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	id := f.identity(t, f.token, "old", nil)
	stream, err := f.connectAs(t, id)
	if err != nil {
		t.Fatal(err)
	}
	var apiErr *client.APIError
	err = f.api.DeleteNode(ctx, "old", false)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 409 || !strings.Contains(apiErr.Message, "--force") {
		t.Fatalf("removing a connected node = %v; want 409 naming --force", err)
	}
	if _, err := f.api.GetNode(ctx, "old"); err != nil {
		t.Fatalf("the refused removal removed the node: %v", err)
	}
	if err := f.api.DeleteNode(ctx, "old", true); err != nil {
		t.Fatal(err)
	}
	streamEnded(t, stream, 10*time.Second, "the forced removal")
	if _, err := f.api.GetNode(ctx, "old"); !client.IsNotFound(err) {
		t.Errorf("GetNode of the removed node = %v; want not found", err)
	}
	if err := f.renewAs(t, id); err == nil {
		t.Error("the certificate of a removed node renewed")
	}
	if _, err := f.connectAs(t, id); err == nil {
		t.Error("the certificate of a removed node connected")
	}
	// The host can enroll again, as a new node.
	again := f.identity(t, f.token, "old", nil)
	if again.NodeID == id.NodeID {
		t.Errorf("the node enrolled again under its old ID %s", id.NodeID)
	}
	if _, err := f.connectAs(t, again); err != nil {
		t.Errorf("the new node of the same name: %v", err)
	}
}

// Review finding 10: a node whose certificate expired or was lost
// re-enrolls, with a token an operator made for it, as the same node, and
// its older certificates are refused from then on.
func TestReEnrollWithNodeToken(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	labels := map[string]string{"role": "edge"}
	old := f.identity(t, f.token, "edge", labels)
	stream, err := f.connectAs(t, old)
	if err != nil {
		t.Fatal(err)
	}

	key, csr := pkitest.NodeCSR(t)
	_, err = f.enrollAs(t, f.token, "edge", labels, csr)
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "token create --node edge") {
		t.Errorf("enrolling a taken name with an ordinary token = %v; want AlreadyExists pointing to token create --node", err)
	}
	if _, err := f.api.CreateToken(ctx, api.TokenRequest{Node: "edge", Uses: 2}); err == nil {
		t.Error("a re-enrollment token of two uses was made")
	}
	if _, err := f.api.CreateToken(ctx, api.TokenRequest{Node: "nobody"}); !client.IsNotFound(err) {
		t.Errorf("a re-enrollment token for a node that does not exist = %v; want not found", err)
	}
	// The node may be named by its ID; the token is good for one use.
	tok := f.newToken(t, api.TokenRequest{Node: old.NodeID})
	if _, err := f.enrollAs(t, tok, "other", nil, csr); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "--name edge") {
		t.Errorf("a re-enrollment token for edge used for node other = %v; want PermissionDenied saying to start the agent with --name edge", err)
	}
	if _, err := f.api.GetNode(ctx, "other"); !client.IsNotFound(err) {
		t.Errorf("node other after the refused re-enrollment: %v; want none", err)
	}
	resp, err := f.enrollAs(t, tok, "edge", labels, csr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.enrollAs(t, tok, "edge", labels, csr); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a second re-enrollment with the token = %v; want Unauthenticated (used up)", err)
	}
	if resp.NodeId != old.NodeID {
		t.Errorf("re-enrolled node ID = %s; want the old one, %s", resp.NodeId, old.NodeID)
	}
	n, err := f.api.GetNode(ctx, "edge")
	if err != nil || n.ID != old.NodeID || n.Labels["role"] != "edge" || n.Epoch != 1 {
		t.Errorf("node after re-enrollment = %+v, %v; want ID %s, role=edge, epoch 1", n, err, old.NodeID)
	}
	streamEnded(t, stream, 10*time.Second, "the re-enrollment")
	if _, err := f.connectAs(t, old); err == nil {
		t.Error("the certificate from before the re-enrollment connected")
	}
	if err := f.renewAs(t, old); err == nil {
		t.Error("the certificate from before the re-enrollment renewed")
	}
	id, err := pki.SaveIdentity(t.TempDir(), key, resp.Certificate, resp.CaCertificate)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.connectAs(t, id); err != nil {
		t.Errorf("the new certificate: %v", err)
	}
	if err := f.renewAs(t, id); err != nil {
		t.Errorf("renewing the new certificate: %v", err)
	}
}

// Review finding 5: the token decides a node's labels; an agent may ask
// only for what the token allows.
func TestEnrollLabelsDecidedByToken(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	berlin := f.newToken(t, api.TokenRequest{Uses: 10, Labels: map[string]string{"site": "berlin"}})
	for _, labels := range []map[string]string{
		{"site": "berlin", "role": "db", "tier": "payments"},
		{"site": "paris"},
	} {
		_, csr := pkitest.NodeCSR(t)
		_, err := f.enrollAs(t, berlin, "rogue", labels, csr)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "site=berlin") {
			t.Errorf("enrolling with labels %v on a site=berlin token = %v; want InvalidArgument naming site=berlin", labels, err)
		}
	}
	if _, err := f.api.GetNode(ctx, "rogue"); !client.IsNotFound(err) {
		t.Errorf("a refused enrollment left node rogue: %v", err)
	}
	f.identity(t, berlin, "honest", map[string]string{"site": "berlin"})
	f.identity(t, berlin, "quiet", nil)
	zone := f.newToken(t, api.TokenRequest{Uses: 10, AgentLabels: []string{"zone"}})
	f.identity(t, zone, "zoned", map[string]string{"zone": "eu-1"})
	_, csr := pkitest.NodeCSR(t)
	if _, err := f.enrollAs(t, zone, "greedy", map[string]string{"zone": "eu-1", "role": "db"}, csr); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "role=db") || !strings.Contains(err.Error(), "zone") {
		t.Errorf("enrolling with role=db on a token that lets agents choose zone = %v; want InvalidArgument naming role=db and zone", err)
	}
	for name, want := range map[string]map[string]string{"honest": {"site": "berlin"}, "quiet": {"site": "berlin"}, "zoned": {"zone": "eu-1"}} {
		n, err := f.api.GetNode(ctx, name)
		if err != nil || !maps.Equal(n.Labels, want) {
			t.Errorf("node %s labels = %v, %v; want %s", name, n.Labels, err, want)
		}
	}
}

// Review finding 18: no node takes a name of the form of a node ID, which
// the API would resolve first.
func TestEnrollRefusesNodeIDName(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	victim := f.identity(t, f.token, "victim", nil)
	_, csr := pkitest.NodeCSR(t)
	_, err := f.enrollAs(t, f.token, victim.NodeID, nil, csr)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "node ID") {
		t.Errorf("enrolling under the name %s = %v; want InvalidArgument naming the node ID form", victim.NodeID, err)
	}
}

// Review finding 12: a CSR the server cannot sign consumes no token use and
// leaves no node.
func TestEnrollBadCSRKeyLeavesNoNode(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	tok := f.newToken(t, api.TokenRequest{Uses: 1})
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.enrollAs(t, tok, "ghost", nil, csr); status.Code(err) != codes.InvalidArgument {
		t.Errorf("enrolling with an RSA key = %v; want InvalidArgument", err)
	}
	if _, err := f.api.GetNode(ctx, "ghost"); !client.IsNotFound(err) {
		t.Errorf("the refused CSR left node ghost: %v", err)
	}
	f.identity(t, tok, "ghost", nil) // the one use is still there
}

// Review finding 10: the server renews its certificate in place, for new
// handshakes on both listeners; agents keep connecting.
func TestServerCertificateRenewsInPlace(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	s := f.srv
	id := f.identity(t, f.token, "edge", nil)
	original := s.cert.Get().Leaf

	// A certificate close to its end, as a server that ran for a year has.
	short, err := s.ca.Roots().Serving().ServerCertificate(s.hosts, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s.cert.Set(short)
	if got := f.serverCerts(t, id); !got[0].Equal(short.Leaf) || !got[1].Equal(short.Leaf) {
		t.Fatalf("served certificates expire %v and %v; want the short one's %v", got[0].NotAfter, got[1].NotAfter, short.Leaf.NotAfter)
	}
	s.checkServerCertificate() // the stored one is still good: it comes back
	if got := f.serverCerts(t, id); !got[0].Equal(original) || !got[1].Equal(original) {
		t.Errorf("after the check, served certificates expire %v and %v; want the stored one's %v", got[0].NotAfter, got[1].NotAfter, original.NotAfter)
	}

	s.cert.Set(short)
	for _, name := range []string{"server.crt", "server.key"} {
		if err := os.Remove(filepath.Join(s.cfg.DataDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	s.checkServerCertificate() // nothing stored: a new one is issued
	renewed := s.cert.Get().Leaf
	if renewed.Equal(original) || pki.ServerCertificateDue(renewed, time.Now()) {
		t.Fatalf("renewed certificate expires %v; want a new one, not due", renewed.NotAfter)
	}
	if got := f.serverCerts(t, id); !got[0].Equal(renewed) || !got[1].Equal(renewed) {
		t.Errorf("served certificates expire %v and %v; want the renewed one's %v", got[0].NotAfter, got[1].NotAfter, renewed.NotAfter)
	}
	if _, err := os.Stat(filepath.Join(s.cfg.DataDir, "server.crt")); err != nil {
		t.Errorf("the renewed certificate was not stored: %v", err)
	}
	if _, err := f.connectAs(t, id); err != nil {
		t.Errorf("an agent connecting after the renewal: %v", err)
	}
	if err := f.api.Health(context.Background()); err != nil {
		t.Errorf("the API after the renewal: %v", err)
	}
}

// serverCerts returns the leaf certificates the API and the agent endpoint
// present to a new handshake, the latter to the node of id.
func (f *abuseFleet) serverCerts(t *testing.T, id *pki.Identity) [2]*x509.Certificate {
	t.Helper()
	var out [2]*x509.Certificate
	for i, c := range []struct {
		addr string
		conf *tls.Config
	}{
		{strings.TrimPrefix(f.srv.APIURL(), "https://"), &tls.Config{RootCAs: id.CAPool, ServerName: f.host}},
		{f.srv.AgentAddr(), pki.AgentClientTLS(id, f.host)},
	} {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: callTimeout}, Config: c.conf}
		conn, err := d.DialContext(context.Background(), "tcp", c.addr)
		if err != nil {
			t.Fatalf("TLS to %s: %v", c.addr, err)
		}
		out[i] = conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
		conn.Close()
	}
	return out
}

// twoNodesOneInstanceEach enrolls nodes a and b, applies deployment "both"
// with an instance on each, and opens a's stream; byNode maps the node
// names to their instance.
func (f *abuseFleet) twoNodesOneInstanceEach(t *testing.T) (stream agentproto.Agent_ConnectClient, byNode map[string]api.Instance) {
	t.Helper()
	ctx := context.Background()
	labels := map[string]string{"role": "x"}
	a := f.identity(t, f.token, "a", labels)
	f.identity(t, f.token, "b", labels)
	doc := "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: both}\n" +
		"spec:\n  selector: {matchLabels: {role: x}}\n  container: {image: hello:v1}\n"
	if _, err := f.api.Apply(ctx, "both.yaml", "", []byte(doc)); err != nil {
		t.Fatal(err)
	}
	byNode = map[string]api.Instance{}
	testenv.Eventually(t, 30*time.Second, "an instance on each node", func() error {
		ins, err := f.api.ListInstances(ctx, api.DefaultProject, "both")
		if err != nil {
			return err
		}
		for _, in := range ins {
			byNode[in.NodeName] = in
		}
		if len(byNode) != 2 {
			return fmt.Errorf("instances on %d nodes", len(byNode))
		}
		return nil
	})
	stream, err := f.connectAs(t, a)
	if err != nil {
		t.Fatal(err)
	}
	return stream, byNode
}

// Review finding 5 (already true, kept): a node reports only on its own
// instances; a report on another node's instance changes nothing. The store
// suite checks the same rule (storetest, "status of another node's instance").
func TestNodeCannotReportOtherNodesInstances(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	stream, byNode := f.twoNodesOneInstanceEach(t)
	report := func(in api.Instance, state api.InstanceState) {
		t.Helper()
		err := stream.Send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Status{Status: &agentproto.InstanceStatus{
			InstanceId: in.ID, State: string(state), ImageDigest: "evil.example/x@sha256:" + strings.Repeat("0", 64)}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	report(byNode["b"], api.InstanceFailed) // forged
	report(byNode["a"], api.InstanceRunning)
	// Reports of one stream are recorded in order: once a's own is, the
	// forged one was looked at.
	testenv.Eventually(t, 30*time.Second, "node a's report on its own instance", func() error {
		ins, err := f.api.ListInstances(ctx, api.DefaultProject, "both")
		if err != nil {
			return err
		}
		for _, in := range ins {
			byNode[in.NodeName] = in
		}
		if st := byNode["a"].State; st != api.InstanceRunning {
			return fmt.Errorf("node a's instance is %s", st)
		}
		return nil
	})
	if b := byNode["b"]; b.State != api.InstancePending || b.ImageDigest != "" {
		t.Errorf("node b's instance after node a's forged report: state %s, digest %q; want pending, none", b.State, b.ImageDigest)
	}
}

// waitFor waits until cond holds, for 30s at most: testenv.Eventually,
// for a condition with nothing to say while it does not hold.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, what, func() error {
		if !cond() {
			return errors.New("not yet")
		}
		return nil
	})
}

// TestEnrollmentRetriedWithTheSameKey: an agent that gave up waiting for
// an enrollment the server recorded anyway tries again with the same key;
// it gets the same node, a certificate that works, and the token's use is
// counted once, even for a token of one use. Another key asking for the
// name is still refused.
func TestEnrollmentRetriedWithTheSameKey(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	ctx := context.Background()
	tok := f.newToken(t, api.TokenRequest{Uses: 1})
	key, csr := pkitest.NodeCSR(t)
	first, err := f.enrollAs(t, tok, "edge-retry", nil, csr)
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.enrollAs(t, tok, "edge-retry", nil, csr)
	if err != nil {
		t.Fatalf("the same enrollment again: %v; want the same node", err)
	}
	if again.NodeId != first.NodeId {
		t.Fatalf("the retry got node %s; want %s, the one recorded", again.NodeId, first.NodeId)
	}
	id, err := pki.SaveIdentity(t.TempDir(), key, again.Certificate, again.CaCertificate)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := f.connectAs(t, id)
	if err != nil {
		t.Fatalf("connecting with the retry's certificate: %v", err)
	}
	// openStream took the welcome; the node's desired state follows.
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("the stream opened with the retry's certificate: %v", err)
	}
	toks, err := f.api.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, tokID, _, err := pki.ParseEnrollToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	counted := -1
	for _, tk := range toks {
		if tk.ID == tokID {
			counted = tk.Uses
		}
	}
	if counted != 1 {
		t.Errorf("the token counts %d uses; want 1", counted)
	}
	_, other := pkitest.NodeCSR(t)
	if _, err := f.enrollAs(t, f.token, "edge-retry", nil, other); status.Code(err) != codes.AlreadyExists {
		t.Errorf("another key asking for the name: %v; want AlreadyExists", err)
	}
}
