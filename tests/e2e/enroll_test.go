package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// TestEnrollmentRefusals checks that every bad token is refused with a
// message that says what is wrong, and that the refused agent exits non-zero.
func TestEnrollmentRefusals(t *testing.T) {
	testenv.RequireDocker(t)
	f := newFleet(t)

	good := f.token("--uses", "1")
	parts := strings.Split(good, "-")
	wrongSecret := strings.Join(append(parts[:len(parts)-1], strings.Repeat("a", len(parts[len(parts)-1]))), "-")

	expired := f.token("--ttl", "1s")
	revoked := f.token()
	toks, err := f.client.ListTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	revokedID := toks[len(toks)-1].ID
	if out, code := f.cli("", "token", "revoke", revokedID); code != 0 {
		t.Fatalf("token revoke: exit %d: %s", code, out)
	}
	otherCA, _, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	foreign := pki.FormatEnrollToken(otherCA.Fingerprint(), "abcdefghijkl", "abcdefghijklmnopqrstuvwxyz234567")

	// The good token's one use goes first, so "used up" can be checked.
	f.startAgent("first", good, "")
	f.waitNodeState("first", api.NodeReady, 20*time.Second)
	time.Sleep(1100 * time.Millisecond) // let the 1s token expire

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
			p := f.startAgent("refused"+string(rune('a'+i)), tc.token, "")
			done, err := p.exited(20 * time.Second)
			if !done {
				t.Fatalf("agent still running; want it to exit refused. Output:\n%s", p.out)
			}
			var ee interface{ ExitCode() int }
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("agent exit: %v; want exit code 1", err)
			}
			if !strings.Contains(p.out.String(), tc.want) {
				t.Errorf("agent said:\n%s\nwant it to contain %q", p.out, tc.want)
			}
		})
	}
	nodes, err := f.client.ListNodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 {
		t.Errorf("%d nodes enrolled; want only the first", len(nodes))
	}

	t.Run("API without a token answers 401", func(t *testing.T) {
		caPEM := readFile(t, filepath.Join(f.dir, "server", "ca.crt"))
		tlsConf, err := pki.CAFileClientTLS(caPEM)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
		for _, auth := range []string{"", "Bearer nonsense", "Bearer dfa1-aaaaaaaaaaaa-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"} {
			req, _ := http.NewRequest("GET", "https://"+f.apiAddr+"/v1/nodes", nil)
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
		key, err := pki.NewNodeKey()
		if err != nil {
			t.Fatal(err)
		}
		csr, err := pki.NewCSR(key)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, err := otherCA.SignNode(csr, f.node("first").ID, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		// The impostor trusts the real server's CA, so only its own certificate is wrong.
		id, err := pki.SaveIdentity(dir, key, certPEM, readFile(t, filepath.Join(f.dir, "server", "ca.crt")))
		if err != nil {
			t.Fatal(err)
		}
		tlsConf := pki.AgentClientTLS(id, "127.0.0.1")
		conn, err := grpc.NewClient(f.agentAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
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
		if !strings.Contains(err.Error(), "certificate") && !strings.Contains(err.Error(), "tls") {
			t.Errorf("refusal = %v; want a TLS certificate error", err)
		}
	})
}
