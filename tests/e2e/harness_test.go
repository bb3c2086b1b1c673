// Package e2e runs the real dockfleet binary as a server and several agents,
// as separate processes, against the real Docker daemon.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/api"
	dfclient "github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dockfleet-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dockfleet")
	build := exec.Command("go", "build", "-o", binary, "../../cmd/dockfleet")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building dockfleet: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a dockfleet process whose output is kept for failure messages.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(binary, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.out)
		}
	})
	return p
}

// stop ends the process with SIGTERM, as a user would.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the process with SIGKILL: no clean-up of any kind.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) exited(within time.Duration) (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(within):
		return false, nil
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// fleet is one server and its agents.
type fleet struct {
	t         *testing.T
	dir       string
	apiAddr   string
	agentAddr string
	server    *proc
	client    *dfclient.Client
	agents    map[string]*proc
	nodeIDs   map[string]string // name → ID
	heartbeat time.Duration
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	f := &fleet{t: t, dir: t.TempDir(), apiAddr: freeAddr(t), agentAddr: freeAddr(t), agents: map[string]*proc{},
		nodeIDs: map[string]string{}, heartbeat: time.Second}
	f.startServer()
	t.Cleanup(f.removeContainers)
	return f
}

func (f *fleet) startServer() {
	f.t.Helper()
	f.server = start(f.t, "server", "server", "--data-dir", filepath.Join(f.dir, "server"),
		"--api-addr", f.apiAddr, "--agent-addr", f.agentAddr, "--heartbeat-interval", f.heartbeat.String())
	caFile := filepath.Join(f.dir, "server", "ca.crt")
	tokFile := filepath.Join(f.dir, "server", "admin.token")
	waitFor(f.t, 20*time.Second, "server to start", func() error {
		if ok, err := f.server.exited(0); ok {
			f.t.Fatalf("server exited: %v\n%s", err, f.server.out)
		}
		tok, err := os.ReadFile(tokFile)
		if err != nil {
			return err
		}
		c, err := dfclient.New(dfclient.Config{Addr: "https://" + f.apiAddr, Token: strings.TrimSpace(string(tok)), CACertFile: caFile})
		if err != nil {
			return err
		}
		if _, err := c.ListNodes(context.Background()); err != nil {
			return err
		}
		f.client = c
		return nil
	})
}

// cli runs a CLI command against the fleet's server and returns its output and exit code.
func (f *fleet) cli(stdin string, args ...string) (string, int) {
	f.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(),
		"DOCKFLEET_ADDR=https://"+f.apiAddr,
		"DOCKFLEET_CACERT="+filepath.Join(f.dir, "server", "ca.crt"),
		"DOCKFLEET_TOKEN_FILE="+filepath.Join(f.dir, "server", "admin.token"))
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		f.t.Fatalf("running dockfleet %v: %v", args, err)
	}
	return string(out), code
}

func (f *fleet) token(args ...string) string {
	f.t.Helper()
	out, code := f.cli("", append([]string{"token", "create"}, args...)...)
	if code != 0 {
		f.t.Fatalf("token create: exit %d: %s", code, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "dft1-") {
			return strings.TrimSpace(line)
		}
	}
	f.t.Fatalf("no token in output of token create: %q", out)
	return ""
}

// startAgent starts an agent process; token may be empty on restarts.
func (f *fleet) startAgent(name, token, labels string, extra ...string) *proc {
	f.t.Helper()
	args := []string{"agent", "--server", f.agentAddr, "--data-dir", filepath.Join(f.dir, "agent-"+name), "--name", name, "--resync", "2s"}
	if token != "" {
		// As the docs say: the token in a private file, not on the command line.
		file := filepath.Join(f.dir, "token-"+name)
		if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
			f.t.Fatal(err)
		}
		args = append(args, "--token-file", file)
	}
	if labels != "" {
		args = append(args, "--labels", labels)
	}
	p := start(f.t, "agent "+name, append(args, extra...)...)
	f.agents[name] = p
	return p
}

// addAgents enrolls agents name=labels and waits until all are ready.
func (f *fleet) addAgents(specs ...[2]string) {
	f.t.Helper()
	// The token lets the agents choose the label keys they ask for.
	var keys []string
	for _, s := range specs {
		for _, kv := range strings.Split(s[1], ",") {
			if k, _, ok := strings.Cut(kv, "="); ok && !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	args := []string{"--uses", fmt.Sprint(len(specs))}
	if len(keys) > 0 {
		args = append(args, "--agent-labels", strings.Join(keys, ","))
	}
	tok := f.token(args...)
	for _, s := range specs {
		f.startAgent(s[0], tok, s[1])
	}
	for _, s := range specs {
		f.waitNodeState(s[0], api.NodeReady, 20*time.Second)
	}
}

func (f *fleet) node(name string) api.Node {
	f.t.Helper()
	n, err := f.client.GetNode(context.Background(), name)
	if err != nil {
		f.t.Fatalf("getting node %s: %v", name, err)
	}
	f.nodeIDs[name] = n.ID
	return n
}

func (f *fleet) waitNodeState(name string, want api.NodeState, within time.Duration) time.Duration {
	f.t.Helper()
	begin := time.Now()
	waitFor(f.t, within, fmt.Sprintf("node %s to be %s", name, want), func() error {
		n, err := f.client.GetNode(context.Background(), name)
		if err != nil {
			return err
		}
		f.nodeIDs[name] = n.ID
		if n.State != want {
			return fmt.Errorf("state %s", n.State)
		}
		return nil
	})
	return time.Since(begin)
}

// containers lists the containers a node's agent owns, as Docker sees them.
func (f *fleet) containers(name string) []mcontainer.Summary {
	f.t.Helper()
	sdk := testenv.SDK(f.t)
	id := f.nodeIDs[name]
	if id == "" {
		f.node(name)
		id = f.nodeIDs[name]
	}
	res, err := sdk.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", container.LabelNode+"="+id)})
	if err != nil {
		f.t.Fatalf("listing containers of %s: %v", name, err)
	}
	return res.Items
}

// removeContainers removes every container the fleet's agents made.
func (f *fleet) removeContainers() {
	for _, p := range f.agents {
		p.stop()
	}
	sdk := testenv.SDK(f.t)
	for _, id := range f.nodeIDs {
		res, err := sdk.ContainerList(context.Background(), client.ContainerListOptions{All: true,
			Filters: make(client.Filters).Add("label", container.LabelNode+"="+id)})
		if err != nil {
			continue
		}
		for _, c := range res.Items {
			sdk.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
	}
}

func (f *fleet) apply(yaml string) string {
	f.t.Helper()
	out, code := f.cli(yaml, "apply", "-f", "-")
	if code != 0 {
		f.t.Fatalf("apply: exit %d: %s", code, out)
	}
	return out
}

func (f *fleet) instances(deployment string) []api.Instance {
	f.t.Helper()
	is, err := f.client.ListInstances(context.Background(), api.DefaultProject, deployment)
	if err != nil {
		f.t.Fatalf("listing instances: %v", err)
	}
	return is
}

// waitHealthy waits until deployment has exactly n instances, all healthy.
func (f *fleet) waitHealthy(deployment string, n int, within time.Duration) []api.Instance {
	f.t.Helper()
	var is []api.Instance
	waitFor(f.t, within, fmt.Sprintf("%d healthy instances of %s", n, deployment), func() error {
		is = f.instances(deployment)
		if len(is) != n {
			return fmt.Errorf("%d instances", len(is))
		}
		for _, i := range is {
			if i.State != api.InstanceHealthy {
				return fmt.Errorf("instance %s on %s is %s %s", i.ID, i.NodeName, i.State, i.Reason)
			}
		}
		return nil
	})
	return is
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", within, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
