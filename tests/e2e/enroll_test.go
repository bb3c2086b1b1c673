package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/pki/pkitest"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// TestEnrollmentRefusals checks that every bad token is refused with a
// message that says what is wrong, and that the refused agent exits non-zero.
func TestEnrollmentRefusals(t *testing.T) {
	testenv.RequireDocker(t)
	f := harness.NewFleet(t)

	good := f.Token("--uses", "1")
	parts := strings.Split(good, "-")
	wrongSecret := strings.Join(append(parts[:len(parts)-1], strings.Repeat("a", len(parts[len(parts)-1]))), "-")

	expired := f.Token("--ttl", "1ms")
	revoked := f.Token()
	toks, err := f.Client.ListTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	expiredID, revokedID := toks[len(toks)-2].ID, toks[len(toks)-1].ID
	if !strings.Contains(expired, expiredID) || !strings.Contains(revoked, revokedID) {
		t.Fatalf("tokens %v: the last two are not the ones just made", toks)
	}
	expiresAt := toks[len(toks)-2].ExpiresAt
	if out, code := f.CLI("", "token", "revoke", revokedID); code != 0 {
		t.Fatalf("token revoke: exit %d: %s", code, out)
	}
	otherCA, _, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	foreign := pki.FormatEnrollToken(otherCA.Fingerprint(), "abcdefghijkl", "abcdefghijklmnopqrstuvwxyz234567")

	// The good token's one use goes first, so "used up" can be checked.
	f.StartAgent("first", good, "")
	f.WaitNodeState("first", api.NodeReady, 20*time.Second)
	// The server and the test read one clock: the token is expired once the
	// time the server gave it has passed (a millisecond after it was made).
	testenv.Eventually(t, 10*time.Second, "the 1ms token to expire", func() error {
		if left := time.Until(expiresAt); left >= 0 {
			return fmt.Errorf("%v left", left)
		}
		return nil
	})

	tests := []struct {
		name, token, want string
	}{
		{"no token", "", "no enrollment token was given"},
		{"not a token", "hello", "not a dockfleet enrollment token"},
		{"wrong secret", wrongSecret, "is not valid"},
		{"expired", expired, "expired at"},
		{"revoked", revoked, "was revoked"},
		{"used up", good, "used up (1 of 1 uses)"},
		{"another server's CA", foreign, "fingerprint"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := f.StartAgent("refused"+string(rune('a'+i)), tc.token, "")
			done, err := p.Exited(20 * time.Second)
			if !done {
				t.Fatalf("agent still running; want it to exit refused. Output:\n%s", p.Out)
			}
			var ee interface{ ExitCode() int }
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("agent exit: %v; want exit code 1", err)
			}
			if !strings.Contains(p.Out.String(), tc.want) {
				t.Errorf("agent said:\n%s\nwant it to contain %q", p.Out, tc.want)
			}
		})
	}
	nodes, err := f.Client.ListNodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 {
		t.Errorf("%d nodes enrolled; want only the first", len(nodes))
	}

	t.Run("API without a token answers 401", func(t *testing.T) {
		caPEM := harness.ReadFile(t, filepath.Join(f.Dir, "server", "ca.crt"))
		tlsConf, err := pki.CAFileClientTLS(caPEM)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
		for _, auth := range []string{"", "Bearer nonsense", "Bearer dfa1-aaaaaaaaaaaa-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"} {
			req, _ := http.NewRequest("GET", "https://"+f.APIAddr+"/v1/nodes", nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "token") {
				t.Errorf("Authorization %q: %d %s; want 401 naming the token", auth, resp.StatusCode, body)
			}
		}
	})

	t.Run("a client certificate from another CA is refused", func(t *testing.T) {
		key, csr := pkitest.NodeCSR(t)
		certPEM, err := otherCA.SignNode(csr, f.Node("first").ID, 0, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
		if err != nil {
			t.Fatal(err)
		}
		// The impostor trusts the real server's CA, so only its own certificate is wrong.
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(harness.ReadFile(t, filepath.Join(f.Dir, "server", "ca.crt")))
		tlsConf := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "127.0.0.1"}
		conn, err := grpc.NewClient(f.AgentAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stream, err := agentproto.NewAgentClient(conn).Connect(ctx)
		if err == nil {
			stream.Send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Hello{Hello: &agentproto.Hello{ProtocolVersion: agentproto.Version}}})
			_, err = stream.Recv()
		}
		if err == nil {
			t.Fatal("the server accepted a stream from a certificate of another CA")
		}
		if code := status.Code(err); code != codes.Unavailable {
			t.Errorf("gRPC refusal = %v; want the connection refused (Unavailable), not an answer from the service", err)
		}
		// In TLS 1.3 the server's verdict on a client certificate arrives
		// as an alert after the client's side of the handshake: read it.
		raw, err := tls.Dial("tcp", f.AgentAddr, tlsConf)
		if err != nil {
			if !strings.Contains(err.Error(), "certificate") {
				t.Errorf("handshake error = %v; want a certificate error", err)
			}
			return
		}
		defer raw.Close()
		raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = raw.Read(make([]byte, 1))
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("after the handshake the server said %v; want a certificate alert", err)
		}
	})
}

// TestBadInput checks what a user sees when they get something wrong: every
// spec problem with its file and line, nothing stored; a server that cannot
// be reached named with the reason; a Docker daemon that cannot be reached
// reported on the node by an agent that keeps running.
func TestBadInput(t *testing.T) {
	testenv.RequireDocker(t)
	f := harness.NewFleet(t)

	t.Run("invalid spec", func(t *testing.T) {
		bad := `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: Bad_Name
spec:
  mode: global
  replicas: 3
  colour: blue
  container:
    image: hello:v1
    ports:
      - containerPort: 70000
`
		path := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		out, code := f.CLI("", "apply", "-f", path)
		if code != 1 {
			t.Errorf("apply of an invalid spec: exit %d; want 1", code)
		}
		for _, want := range []string{"bad.yaml:4: metadata.name", "bad.yaml:7: spec.replicas", "bad.yaml:8: spec.colour", "bad.yaml:12: spec.container.ports[0].containerPort"} {
			if !strings.Contains(out, want) {
				t.Errorf("apply output lacks %q:\n%s", want, out)
			}
		}
		if ds, err := f.Client.ListDeployments(context.Background(), api.DefaultProject); err != nil || len(ds) != 0 {
			t.Errorf("after a refused apply: %d deployments, %v; want none", len(ds), err)
		}
	})

	t.Run("unreachable server", func(t *testing.T) {
		addr := testenv.FreeAddr(t)
		out, code := f.CLI("", "nodes", "--addr", "https://"+addr)
		if code != 1 || !strings.Contains(out, addr) || !strings.Contains(out, "refused") {
			t.Errorf("nodes against a closed port: exit %d, %q; want exit 1 naming %s and why", code, out, addr)
		}
	})

	t.Run("usage errors exit 2", func(t *testing.T) {
		for _, args := range [][]string{{"apply"}, {"nodes", "--no-such-flag"}, {"get", "deployments", "-o", "xml"}, {"no-such-command"}} {
			if out, code := f.CLI("", args...); code != 2 {
				t.Errorf("dockfleet %v: exit %d; want 2. Output:\n%s", args, code, out)
			}
		}
	})

	t.Run("docker unreachable is reported on the node", func(t *testing.T) {
		p := f.StartAgent("nodocker", f.Token("--uses", "1"), "", "--docker-host", "unix://"+t.TempDir()+"/no.sock")
		f.WaitNodeState("nodocker", api.NodeReady, 20*time.Second)
		testenv.Eventually(t, 20*time.Second, "the node to report Docker unreachable", func() error {
			if n := f.Node("nodocker"); !strings.Contains(n.Error, "no.sock") {
				return fmt.Errorf("node error %q", n.Error)
			}
			return nil
		})
		if done, err := p.Exited(0); done {
			t.Errorf("agent exited without Docker: %v", err)
		}
		out, _ := f.CLI("", "nodes")
		if !strings.Contains(out, "no.sock") {
			t.Errorf("nodes does not show the Docker error:\n%s", out)
		}
	})
}
