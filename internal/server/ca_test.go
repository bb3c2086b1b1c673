package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/pgtest"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/servertest"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// caAgent is an in-process agent over an in-memory runtime that counts its
// sessions: a CA rotation must not end any.
type caAgent struct {
	name, dir             string
	connects, disconnects atomic.Int64
}

// startCAAgent runs an agent of servers until the test ends.
func startCAAgent(t *testing.T, name, token string, servers ...string) *caAgent {
	t.Helper()
	ca := &caAgent{name: name, dir: t.TempDir()}
	cfg := agent.DefaultConfig()
	cfg.Servers, cfg.Token, cfg.DataDir, cfg.Name = servers, token, ca.dir, name
	cfg.Runtime, cfg.ResyncInterval, cfg.MaxBackoff = fakert.New(), 200*time.Millisecond, time.Second
	cfg.Hooks.OnConnected = func(string) { ca.connects.Add(1) }
	cfg.Hooks.OnDisconnected = func(error) { ca.disconnects.Add(1) }
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return ca
}

// identity is the agent's stored identity.
func (a *caAgent) identity(t *testing.T) *pki.Identity {
	t.Helper()
	id, err := pki.LoadIdentity(a.dir)
	if err != nil {
		t.Fatalf("agent %s: %v", a.name, err)
	}
	return id
}

// stayedUp fails the test unless every agent connected once and never
// lost its stream.
func stayedUp(t *testing.T, when string, agents []*caAgent) {
	t.Helper()
	for _, a := range agents {
		if c, d := a.connects.Load(), a.disconnects.Load(); c != 1 || d != 0 {
			t.Errorf("%s: agent %s had %d sessions, %d ended; want 1 and none ended", when, a.name, c, d)
		}
	}
}

// rootCerts reads the roots of a CA status's bundle, active first.
func rootCerts(t *testing.T, st api.CA) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for rest := []byte(st.Bundle); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// agentEndpointTakes connects to the agent endpoint at addr with id's
// certificate, trusting roots, and returns nil if the server took it: it
// speaks HTTP/2 after the handshake, where a refusal is an alert.
func agentEndpointTakes(addr string, id *pki.Identity, roots *x509.CertPool) error {
	conf := pki.AgentClientTLS(id, "127.0.0.1")
	conf.RootCAs, conf.NextProtos = roots, []string{"h2"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	_, err = conn.Read(make([]byte, 1))
	return err
}

// servedBy fails unless the server at addr presents a certificate of root.
func servedBy(addr string, root *x509.Certificate) error {
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool(root), ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
	if err != nil {
		return err
	}
	return conn.Close()
}

func fingerprintOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// issuedBy reports whether root issued the leaf of id.
func issuedBy(id *pki.Identity, root *x509.Certificate) bool {
	return id.Leaf.CheckSignatureFrom(root) == nil
}

// TestCARotation rotates the CA of a server with three connected agents:
// each gets a certificate of the new root without its stream ending; the
// server keeps presenting the old root's certificate until the finish, and
// afterwards the new root's only; a certificate of the old root is refused
// from then on, a token made before the finish too, and a new agent
// enrolls with a new token.
func TestCARotation(t *testing.T) {
	ctx := context.Background()
	f := servertest.Start(t, func(c *server.Config) { c.HeartbeatInterval = 200 * time.Millisecond })
	tok, err := f.Client.CreateToken(ctx, api.TokenRequest{TTL: "1h", Uses: 3})
	if err != nil {
		t.Fatal(err)
	}
	var agents []*caAgent
	for i := range 3 {
		agents = append(agents, startCAAgent(t, fmt.Sprintf("edge-%d", i+1), tok.Token, f.AgentAddr))
	}
	waitConnected(t, agents)
	before, err := f.Client.CA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldRoot := rootCerts(t, before)[0]
	if before.Rotating || before.Pending != 0 || before.Nodes != 3 || before.Roots[0].Nodes != 3 {
		t.Fatalf("before the rotation: %+v; want no rotation, 3 nodes on the one root", before)
	}
	oldID := agents[0].identity(t)

	rotated, err := f.Client.RotateCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	roots := rootCerts(t, rotated)
	if !rotated.Rotating || len(roots) != 2 || !roots[1].Equal(oldRoot) || rotated.Roots[1].State != "retiring" ||
		!rotated.Roots[1].Serving || rotated.TokenFingerprint != fingerprintOf(oldRoot) {
		t.Fatalf("after rotate: %+v; want a new active root, the old one retiring and serving, tokens of the old one", rotated)
	}
	newRoot := roots[0]
	if _, err := f.Client.RotateCA(ctx); !isConflict(err) {
		t.Errorf("rotating again: got %v; want 409", err)
	}
	waitNewRoot(t, f.Client, agents, newRoot)
	stayedUp(t, "after the renewals", agents)
	// Until the finish, the server presents the old root's certificate
	// (an agent that missed the rotation still trusts it), and takes
	// certificates of both roots.
	if err := servedBy(f.AgentAddr, oldRoot); err != nil {
		t.Errorf("during the rotation the agent endpoint does not present the old root's certificate: %v", err)
	}
	if err := agentEndpointTakes(f.AgentAddr, oldID, pool(oldRoot)); err != nil {
		t.Errorf("during the rotation a certificate of the old root is refused: %v", err)
	}
	tokBefore, err := f.Client.CreateToken(ctx, api.TokenRequest{TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}

	done, err := f.Client.FinishCA(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if done.Rotating || len(done.Roots) != 2 || done.Roots[1].State != "retired" || !done.Roots[0].Serving ||
		done.TokenFingerprint != fingerprintOf(newRoot) || len(rootCerts(t, done)) != 1 {
		t.Fatalf("after finish: %+v; want the new root alone, serving; the old one retired", done)
	}
	// The CLI's copy of ca.crt held the old root only; the server's data
	// dir has the new one now, as `dockfleet ca bundle` gives it.
	c, err := client.New(client.Config{Addr: f.Server.APIURL(), Token: f.AdminToken, CAPEM: []byte(done.Bundle)})
	if err != nil {
		t.Fatal(err)
	}
	if got := caFingerprint(t, f.DataDir); got != fingerprintOf(newRoot) {
		t.Errorf("the data dir's ca.crt is CA %s; want the new root %s", got, fingerprintOf(newRoot))
	}
	testenv.Eventually(t, 10*time.Second, "both listeners to present the new root's certificate", func() error {
		if err := servedBy(f.AgentAddr, newRoot); err != nil {
			return fmt.Errorf("agent endpoint: %w", err)
		}
		return servedBy(strings.TrimPrefix(f.Server.APIURL(), "https://"), newRoot)
	})
	if err := agentEndpointTakes(f.AgentAddr, oldID, pool(newRoot)); err == nil {
		t.Error("after the finish a certificate of the old root is taken; want it refused")
	}
	if err := agentEndpointTakes(f.AgentAddr, agents[0].identity(t), pool(newRoot)); err != nil {
		t.Errorf("after the finish a certificate of the new root is refused: %v", err)
	}
	// The agents drop the old root too, and stay connected.
	testenv.Eventually(t, 10*time.Second, "the agents to trust the new root alone", func() error {
		for _, a := range agents {
			if id := a.identity(t); len(id.CAs) != 1 || !id.CAs[0].Equal(newRoot) {
				return fmt.Errorf("agent %s trusts %d roots", a.name, len(id.CAs))
			}
		}
		return nil
	})
	stayedUp(t, "after the finish", agents)
	nodesReady(t, c, 3)

	// A token made before the finish names the old root: an agent refuses
	// a server that no longer presents it.
	refused := t.TempDir()
	acfg := agent.DefaultConfig()
	acfg.Server, acfg.Token, acfg.DataDir, acfg.Name, acfg.Runtime = f.AgentAddr, tokBefore.Token, refused, "late", fakert.New()
	late, err := agent.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := late.Run(runCtx); !errors.Is(err, agent.ErrEnrollRefused) || !strings.Contains(err.Error(), "fingerprint") {
		t.Errorf("enrolling with a token made before the finish: got %v; want refused for its CA fingerprint", err)
	}
	// A new token carries the new root; its agent enrolls and connects.
	tok2, err := c.CreateToken(ctx, api.TokenRequest{TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	fresh := startCAAgent(t, "edge-4", tok2.Token, f.AgentAddr)
	waitConnected(t, []*caAgent{fresh})
	if id := fresh.identity(t); !issuedBy(id, newRoot) {
		t.Error("the agent enrolled after the finish holds a certificate of another root than the new one")
	}
	nodesReady(t, c, 4)
	st, err := c.CA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pending != 0 || st.Nodes != 4 || st.Roots[0].Nodes != 4 {
		t.Errorf("at the end: %+v; want 4 nodes, all of the new root", st)
	}
}

// TestCAFinishWaitsForEveryNode: a finish is refused while a node holds a
// certificate of the old root (its agent is off), and --force cuts such a
// node off: it is refused at the handshake afterwards.
func TestCAFinishWaitsForEveryNode(t *testing.T) {
	ctx := context.Background()
	f := servertest.Start(t, func(c *server.Config) { c.HeartbeatInterval = 200 * time.Millisecond })
	tok, err := f.Client.CreateToken(ctx, api.TokenRequest{TTL: "1h", Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	// An agent that enrolls and is stopped: its node keeps the old root.
	dir := t.TempDir()
	acfg := agent.DefaultConfig()
	acfg.Server, acfg.Token, acfg.DataDir, acfg.Name, acfg.Runtime = f.AgentAddr, tok.Token, dir, "off", fakert.New()
	a, err := agent.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { defer close(ran); a.Run(runCtx) }()
	var offID *pki.Identity
	testenv.Eventually(t, 30*time.Second, "the agent to enroll", func() error {
		var err error
		offID, err = pki.LoadIdentity(dir)
		return err
	})
	cancel()
	<-ran

	if _, err := f.Client.FinishCA(ctx, false); !isConflict(err) || !strings.Contains(err.Error(), "no CA rotation") {
		t.Errorf("finish with no rotation: got %v; want 409 saying none is in progress", err)
	}
	rotated, err := f.Client.RotateCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Pending != 1 || len(rotated.PendingNodes) != 1 || rotated.PendingNodes[0] != "off" {
		t.Errorf("after rotate: pending %d %v; want 1 [off]", rotated.Pending, rotated.PendingNodes)
	}
	if _, err := f.Client.FinishCA(ctx, false); !isConflict(err) || !strings.Contains(err.Error(), "off") {
		t.Errorf("finish with node off on the old root: got %v; want 409 naming it", err)
	}
	done, err := f.Client.FinishCA(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if done.Rotating || done.Pending != 1 {
		t.Errorf("after finish --force: %+v; want finished, node off still pending", done)
	}
	if err := agentEndpointTakes(f.AgentAddr, offID, pool(rootCerts(t, done)...)); err == nil {
		t.Error("after finish --force the old root's certificate of node off is taken; want it refused")
	}
}

// TestCARotationAcrossReplicas rotates the CA through one of two replicas
// on one PostgreSQL, and finishes it through the other, with three agents:
// one on each replica, one on either. Each replica takes each change up:
// its agents renew without their streams ending, and both present the new
// root's certificate after the finish and refuse the old root's.
func TestCARotationAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	fast := func(c *server.Config) { c.HeartbeatInterval, c.MissedHeartbeats = 300*time.Millisecond, 3 }
	r0 := servertest.Start(t, func(c *server.Config) {
		c.Store, c.ReplicaID, c.Logger = dsn, "r0", slog.New(slog.DiscardHandler)
		fast(c)
	})
	keyFile := filepath.Join(r0.DataDir, server.DefaultKeyFile)
	r1 := servertest.Start(t, func(c *server.Config) {
		c.Store, c.KeyFile, c.ReplicaID, c.Logger = dsn, keyFile, "r1", slog.New(slog.DiscardHandler)
		fast(c)
	})
	tok, err := r0.Client.CreateToken(ctx, api.TokenRequest{TTL: "1h", Uses: 3})
	if err != nil {
		t.Fatal(err)
	}
	agents := []*caAgent{
		startCAAgent(t, "edge-1", tok.Token, r0.AgentAddr),
		startCAAgent(t, "edge-2", tok.Token, r1.AgentAddr),
		startCAAgent(t, "edge-3", tok.Token, r0.AgentAddr, r1.AgentAddr),
	}
	waitConnected(t, agents)
	before, err := r1.Client.CA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oldRoot := rootCerts(t, before)[0]
	oldID := agents[1].identity(t)

	rotated, err := r0.Client.RotateCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newRoot := rootCerts(t, rotated)[0]
	// r1 reads the change when r0's notice comes; its agent renews too.
	waitNewRoot(t, r1.Client, agents, newRoot)
	if st, err := r1.Client.CA(ctx); err != nil || !st.Rotating || st.Roots[0].Fingerprint != fingerprintOf(newRoot) {
		t.Fatalf("r1's view of the CA: %+v, %v; want the rotation to %s", st, err, fingerprintOf(newRoot))
	}
	if _, err := r1.Client.RotateCA(ctx); !isConflict(err) {
		t.Errorf("rotating again through the other replica: got %v; want 409", err)
	}
	stayedUp(t, "after the renewals", agents)

	done, err := r1.Client.FinishCA(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if done.Rotating {
		t.Fatalf("after finish: %+v; want no rotation", done)
	}
	for _, r := range []*servertest.Fixture{r0, r1} {
		testenv.Eventually(t, 10*time.Second, "replica "+r.AgentAddr+" to present the new root's certificate", func() error {
			return servedBy(r.AgentAddr, newRoot)
		})
		if err := agentEndpointTakes(r.AgentAddr, oldID, pool(newRoot)); err == nil {
			t.Errorf("replica %s takes a certificate of the old root after the finish; want it refused", r.AgentAddr)
		}
		if err := servedBy(r.AgentAddr, oldRoot); err == nil {
			t.Errorf("replica %s still presents a certificate of the old root", r.AgentAddr)
		}
	}
	stayedUp(t, "after the finish", agents)
	c, err := client.New(client.Config{Addr: r0.Server.APIURL(), Token: r0.AdminToken, CAPEM: []byte(done.Bundle)})
	if err != nil {
		t.Fatal(err)
	}
	nodesReady(t, c, 3)
}

func waitConnected(t *testing.T, agents []*caAgent) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "every agent connected", func() error {
		for _, a := range agents {
			if a.connects.Load() == 0 {
				return fmt.Errorf("agent %s is not connected", a.name)
			}
		}
		return nil
	})
}

// waitNewRoot waits until every agent holds a certificate of root and the
// server (through c) counts no node pending.
func waitNewRoot(t *testing.T, c *client.Client, agents []*caAgent, root *x509.Certificate) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "every agent to renew with the new root", func() error {
		for _, a := range agents {
			id := a.identity(t)
			if !issuedBy(id, root) || !id.CAs[0].Equal(root) || len(id.CAs) != 2 {
				return fmt.Errorf("agent %s: certificate of the new root %v, trusting %d roots", a.name, issuedBy(id, root), len(id.CAs))
			}
		}
		st, err := c.CA(context.Background())
		if err != nil {
			return err
		}
		if st.Pending != 0 {
			return fmt.Errorf("the server counts %d nodes pending: %v", st.Pending, st.PendingNodes)
		}
		return nil
	})
}

// nodesReady waits until the server (through c) has n nodes, all ready.
func nodesReady(t *testing.T, c *client.Client, n int) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, fmt.Sprintf("%d nodes ready", n), func() error {
		nodes, err := c.ListNodes(context.Background())
		if err != nil {
			return err
		}
		if len(nodes) != n {
			return fmt.Errorf("%d nodes", len(nodes))
		}
		for _, nd := range nodes {
			if nd.State != api.NodeReady {
				return fmt.Errorf("node %s is %s", nd.Name, nd.State)
			}
		}
		return nil
	})
}

func isConflict(err error) bool {
	var apiErr *client.APIError
	return errors.As(err, &apiErr) && apiErr.StatusCode == 409
}

// A server that was stopped with the old root in its data dir's ca.crt
// (a replica away during a whole rotation) recognises it as a retired root
// of its store, not another fleet's: it starts, and writes the roots now.
func TestRestartAfterRotationUpdatesCACert(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f := servertest.Start(t, func(c *server.Config) { c.DataDir = dir })
	before, err := f.Client.CA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Client.RotateCA(ctx); err != nil {
		t.Fatal(err)
	}
	done, err := f.Client.FinishCA(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, pki.CACertFile), []byte(before.Bundle), 0o600); err != nil {
		t.Fatal(err)
	}
	again := servertest.Start(t, func(c *server.Config) { c.DataDir = dir })
	if got, want := caFingerprint(t, dir), done.Roots[0].Fingerprint; got != want {
		t.Errorf("after the restart the data dir's ca.crt is CA %s; want the active root %s", got, want)
	}
	if err := servedBy(again.AgentAddr, rootCerts(t, done)[0]); err != nil {
		t.Errorf("after the restart the server does not present a certificate of the active root: %v", err)
	}
}
