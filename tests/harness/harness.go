// Package harness runs the real dockfleet binary as a server and agents, as
// separate processes, against the real Docker daemon, and drives them with
// the CLI and the API: the end-to-end tests (tests/e2e) and the
// fault-injection suite (tests/faults) share it.
package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	mcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/api"
	dfclient "github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/pgtest"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// binary is the dockfleet binary Main builds.
var binary string

// Main builds the dockfleet binary, runs the package's tests and exits: call
// it from TestMain.
func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "dockfleet-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dockfleet")
	_, file, _, _ := runtime.Caller(0)
	build := exec.Command("go", "build", "-o", binary, filepath.Join(filepath.Dir(file), "..", "..", "cmd", "dockfleet"))
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building dockfleet: %v\n%s", err, out)
		os.Exit(1)
	}
	// pgtest.Wrap stops the PostgreSQL a cluster's test started, if any.
	code := pgtest.Wrap(m).Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Proc is a dockfleet process whose output is kept for failure messages.
type Proc struct {
	name string
	cmd  *exec.Cmd
	Out  *testenv.Buffer
	done chan struct{}
	err  error
}

// Start starts the dockfleet binary with args as a process named name, stopped
// when the test ends; its output is logged if the test failed.
func Start(t *testing.T, name string, args ...string) *Proc {
	t.Helper()
	return startCmd(t, name, exec.Command(binary, args...))
}

func startCmd(t *testing.T, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{name: name, cmd: cmd, Out: &testenv.Buffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.Out, p.Out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.Out)
		}
	})
	return p
}

// Stop ends the process with SIGTERM, as a user would, and with SIGKILL if
// it is still running 10 s later.
func (p *Proc) Stop() { p.StopWithin(10 * time.Second) }

// StopWithin ends the process with SIGTERM, and with SIGKILL if it is still
// running after d: a server draining its agents takes up to its
// --drain-agents-within to stop.
func (p *Proc) StopWithin(d time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// Kill ends the process with SIGKILL: no clean-up of any kind.
func (p *Proc) Kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// Exited reports whether the process ended within the duration, and how.
func (p *Proc) Exited(within time.Duration) (bool, error) {
	// First without a timer: a select with both ready picks either, and
	// Exited(0) of an ended process must say so.
	select {
	case <-p.done:
		return true, p.err
	default:
	}
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(within):
		return false, nil
	}
}

// Fleet is one server and its agents.
type Fleet struct {
	t         *testing.T
	sdk       *client.Client
	Dir       string // the server's data dir is Dir/server, agent NAME's Dir/agent-NAME
	APIAddr   string
	AgentAddr string
	Server    *Proc
	Client    *dfclient.Client // the admin's, for the server now running
	Agents    map[string]*Proc
	NodeIDs   map[string]string // name → ID
	Heartbeat time.Duration
	// ServerArgs are more flags for the server, after the harness's own:
	// the last of a flag given twice wins.
	ServerArgs []string
	// Netns maps agents' names to the network namespace each runs in
	// (ip netns exec), for the agents that do not run in the test's own.
	Netns map[string]string
	// Replicas are the servers of a fleet NewCluster started, nil for
	// NewFleet's single server; Server, APIAddr, AgentAddr and Client are
	// then those of the replica Use chose.
	Replicas []*Replica
	// Store is the replicas' PostgreSQL URL, empty for a single server.
	Store string
}

// NewFleet starts a server with a 1 s heartbeat and no agents, after opts
// changed the fleet (such as its ServerArgs); the containers of its agents
// are removed when the test ends.
func NewFleet(t *testing.T, opts ...func(*Fleet)) *Fleet {
	t.Helper()
	f := newFleet(t, opts)
	f.StartServer()
	t.Cleanup(f.removeContainers)
	return f
}

// newFleet is a fleet with no server yet: its own addresses, a 1 s
// heartbeat, after opts.
func newFleet(t *testing.T, opts []func(*Fleet)) *Fleet {
	f := &Fleet{t: t, sdk: testenv.SDK(t), Dir: t.TempDir(), APIAddr: testenv.FreeAddr(t), AgentAddr: testenv.FreeAddr(t), Agents: map[string]*Proc{},
		NodeIDs: map[string]string{}, Heartbeat: time.Second, Netns: map[string]string{}}
	for _, o := range opts {
		o(f)
	}
	return f
}

// StartServer starts the server on the fleet's data dir and addresses, and
// waits until its API answers. Its deployments default to the image policy
// unpinned: the tests' images are built on the local daemon, and a server
// that asked a public registry about them would depend on the network (a
// test that pins sets its policy in its spec).
func (f *Fleet) StartServer() {
	f.t.Helper()
	args := []string{"server", "--data-dir", filepath.Join(f.Dir, "server"),
		"--api-addr", f.APIAddr, "--agent-addr", f.AgentAddr, "--heartbeat-interval", f.Heartbeat.String(),
		"--image-policy", "unpinned"}
	f.Server = Start(f.t, "server", append(args, f.ServerArgs...)...)
	f.Client = f.waitAPI("server", f.Server, filepath.Join(f.Dir, "server"), f.APIAddr)
}

// waitAPI waits until the server p, named name, with data dir dir, answers
// on its API at addr, and returns an admin's client of it.
func (f *Fleet) waitAPI(name string, p *Proc, dir, addr string) *dfclient.Client {
	f.t.Helper()
	caFile := filepath.Join(dir, "ca.crt")
	tokFile := filepath.Join(dir, "admin.token")
	var c *dfclient.Client
	testenv.Eventually(f.t, 20*time.Second, name+" to start", func() error {
		if ok, err := p.Exited(0); ok {
			f.t.Fatalf("%s exited: %v\n%s", name, err, p.Out)
		}
		tok, err := os.ReadFile(tokFile)
		if err != nil {
			return err
		}
		cl, err := dfclient.New(dfclient.Config{Addr: "https://" + addr, Token: strings.TrimSpace(string(tok)), CACertFile: caFile})
		if err != nil {
			return err
		}
		if _, err := cl.ListNodes(context.Background()); err != nil {
			return err
		}
		c = cl
		return nil
	})
	return c
}

// CLI runs a CLI command against the fleet's server and returns its output and exit code.
func (f *Fleet) CLI(stdin string, args ...string) (string, int) {
	f.t.Helper()
	return f.cli(f.APIAddr, stdin, args...)
}

// cli runs a CLI command against the API at addr. Every replica has the
// same CA and admin token, so the first one's files serve for all.
func (f *Fleet) cli(addr, stdin string, args ...string) (string, int) {
	f.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(),
		"DOCKFLEET_ADDR=https://"+addr,
		"DOCKFLEET_CACERT="+filepath.Join(f.Dir, "server", "ca.crt"),
		"DOCKFLEET_TOKEN_FILE="+filepath.Join(f.Dir, "server", "admin.token"))
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

// Token creates an enrollment token with token create's args.
func (f *Fleet) Token(args ...string) string {
	f.t.Helper()
	out, code := f.CLI("", append([]string{"token", "create"}, args...)...)
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

// StartAgent starts an agent process, in its network namespace if f.Netns
// names one; token may be empty on restarts. It connects to the fleet's
// server unless extra gives --server: repeated, the flag lists servers.
func (f *Fleet) StartAgent(name, token, labels string, extra ...string) *Proc {
	f.t.Helper()
	args := []string{"agent", "--data-dir", filepath.Join(f.Dir, "agent-"+name), "--name", name, "--resync", "2s",
		// Debug logs a line per reconcile pass, which WaitReconciled counts.
		"--log-level", "debug"}
	if !slices.Contains(extra, "--server") {
		args = append(args, "--server", f.agentServers())
	}
	if token != "" {
		// As the docs say: the token in a private file, not on the command line.
		file := filepath.Join(f.Dir, "token-"+name)
		if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
			f.t.Fatal(err)
		}
		args = append(args, "--token-file", file)
	}
	if labels != "" {
		args = append(args, "--labels", labels)
	}
	args = append(args, extra...)
	var p *Proc
	if ns := f.Netns[name]; ns != "" {
		p = startCmd(f.t, "agent "+name, exec.Command("ip", append([]string{"netns", "exec", ns, binary}, args...)...))
	} else {
		p = Start(f.t, "agent "+name, args...)
	}
	f.Agents[name] = p
	return p
}

// AddAgents enrolls agents name=labels and waits until all are ready.
func (f *Fleet) AddAgents(specs ...[2]string) {
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
	tok := f.Token(args...)
	for _, s := range specs {
		f.StartAgent(s[0], tok, s[1])
	}
	for _, s := range specs {
		f.WaitNodeState(s[0], api.NodeReady, 20*time.Second)
	}
}

// passDone is what an agent logs at debug level after each reconcile pass.
const passDone = `msg="reconcile pass done"`

// WaitReconciled waits until the agent named name has completed a whole
// reconcile pass that began after the call: two more passes than it had
// logged by then, the first of which may have been under way. A test
// checks "nothing changed" after it, instead of sleeping for a resync.
func (f *Fleet) WaitReconciled(name string, within time.Duration) {
	f.t.Helper()
	p := f.Agents[name]
	before := strings.Count(p.Out.String(), passDone)
	testenv.Eventually(f.t, within, fmt.Sprintf("agent %s to complete a reconcile pass", name), func() error {
		if done, err := p.Exited(0); done {
			f.t.Fatalf("agent %s exited while the test waited for a reconcile pass: %v", name, err)
		}
		if n := strings.Count(p.Out.String(), passDone) - before; n < 2 {
			return fmt.Errorf("%d passes completed since the wait began", n)
		}
		return nil
	})
}

// WebSpec is a global deployment "web" of image over the nodes labelled
// role=web, with an HTTP health check and the given update block (indented
// four spaces); round goes into the environment, so that two applies of one
// image with different rounds make two revisions.
func WebSpec(image string, round int, update string) string {
	return fmt.Sprintf(`apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
spec:
  mode: global
  selector:
    matchLabels:
      role: web
  container:
    image: %s
    env:
      ROUND: "%d"
    healthCheck:
      http:
        path: /healthz
        port: 8080
      interval: 500ms
      retries: 2
  update:
%s`, image, round, update)
}

// CheckUnreachableWindow checks that the server marked the node named name
// unreachable after 3 missed heartbeats (--missed-heartbeats' default), by
// the server's own clock: from the node's last heartbeat (its LastSeen,
// which stops moving once it is unreachable) to the server's log line
// "node unreachable". It checks the server's promise, not how soon a busy
// test saw it: call it once WaitNodeState saw the node unreachable. Not
// before the window, and within 2 s after it (the bound): the
// server checks liveness every quarter heartbeat, and the rest of the
// margin is for its process being descheduled on a loaded machine.
func (f *Fleet) CheckUnreachableWindow(name string) {
	f.t.Helper()
	n := f.Node(name)
	// slog's text handler: time=2006-01-02T15:04:05.000Z07:00 level=WARN msg="node unreachable" node_id=ID
	re := regexp.MustCompile(`(?m)^time=(\S+) level=WARN msg="node unreachable" .*\bnode_id=` + regexp.QuoteMeta(n.ID) + `\b`)
	ms := re.FindAllStringSubmatch(f.Server.Out.String(), -1)
	if len(ms) == 0 {
		f.t.Fatalf("node %s (%s) is %s, but the server never logged it unreachable", name, n.ID, n.State)
	}
	at, err := time.Parse(time.RFC3339Nano, ms[len(ms)-1][1])
	if err != nil {
		f.t.Fatalf("the server's log line for node %s unreachable: %v", name, err)
	}
	window, silence := 3*f.Heartbeat, at.Sub(n.LastSeen)
	f.t.Logf("%s marked unreachable after %v of silence; the window is %v", name, silence.Round(time.Millisecond), window)
	// The log's time is to the millisecond.
	if silence < window-time.Millisecond || silence > window+2*time.Second {
		f.t.Errorf("%s marked unreachable after %v of silence; want %v (3 missed heartbeats), within 2s", name, silence.Round(time.Millisecond), window)
	}
}

// Node gets a node by name and records its ID.
func (f *Fleet) Node(name string) api.Node {
	f.t.Helper()
	n, err := f.Client.GetNode(context.Background(), name)
	if err != nil {
		f.t.Fatalf("getting node %s: %v", name, err)
	}
	f.NodeIDs[name] = n.ID
	return n
}

// WaitNodeState waits until the node is in state want and returns how long that took.
func (f *Fleet) WaitNodeState(name string, want api.NodeState, within time.Duration) time.Duration {
	f.t.Helper()
	begin := time.Now()
	testenv.Eventually(f.t, within, fmt.Sprintf("node %s to be %s", name, want), func() error {
		n, err := f.Client.GetNode(context.Background(), name)
		if err != nil {
			return err
		}
		f.NodeIDs[name] = n.ID
		if n.State != want {
			return fmt.Errorf("state %s", n.State)
		}
		return nil
	})
	return time.Since(begin)
}

// Containers lists the containers a node's agent owns, as Docker sees them.
func (f *Fleet) Containers(name string) []mcontainer.Summary {
	f.t.Helper()
	id := f.NodeIDs[name]
	if id == "" {
		id = f.Node(name).ID
	}
	cs, err := f.NodeContainers(context.Background(), id)
	if err != nil {
		f.t.Fatalf("listing containers of %s: %v", name, err)
	}
	return cs
}

// NodeContainers lists the containers of the node with ID id, as Docker sees
// them. Unlike Containers it never fails the test, so goroutines other than
// the test's may call it; take the IDs from NodeIDs before starting them.
func (f *Fleet) NodeContainers(ctx context.Context, id string) ([]mcontainer.Summary, error) {
	res, err := f.sdk.ContainerList(ctx, client.ContainerListOptions{All: true,
		Filters: make(client.Filters).Add("label", container.LabelNode+"="+id)})
	if err != nil {
		return nil, fmt.Errorf("listing containers of node %s: %w", id, err)
	}
	return res.Items, nil
}

// removeContainers removes every container the fleet's agents made.
func (f *Fleet) removeContainers() {
	for _, p := range f.Agents {
		p.Stop()
	}
	sdk := f.sdk
	for _, id := range f.NodeIDs {
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

// Apply applies the YAML with the CLI and returns its output.
func (f *Fleet) Apply(yaml string) string {
	f.t.Helper()
	out, code := f.CLI(yaml, "apply", "-f", "-")
	if code != 0 {
		f.t.Fatalf("apply: exit %d: %s", code, out)
	}
	return out
}

// Instances lists the deployment's instances.
func (f *Fleet) Instances(deployment string) []api.Instance {
	f.t.Helper()
	is, err := f.Client.ListInstances(context.Background(), api.DefaultProject, deployment)
	if err != nil {
		f.t.Fatalf("listing instances: %v", err)
	}
	return is
}

// WaitHealthy waits until deployment has exactly n instances, all healthy.
func (f *Fleet) WaitHealthy(deployment string, n int, within time.Duration) []api.Instance {
	f.t.Helper()
	var is []api.Instance
	testenv.Eventually(f.t, within, fmt.Sprintf("%d healthy instances of %s", n, deployment), func() error {
		is = f.Instances(deployment)
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

// ReadFile reads a file or fails the test.
func ReadFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// WaitRollout waits until the deployment's newest rollout is final.
func (f *Fleet) WaitRollout(deployment string, within time.Duration) api.Rollout {
	f.t.Helper()
	var ro api.Rollout
	testenv.Eventually(f.t, within, "the rollout to end", func() error {
		var err error
		ro, err = f.Client.GetRollout(context.Background(), api.DefaultProject, deployment)
		if err != nil {
			return err
		}
		if !ro.State.Final() {
			return fmt.Errorf("%s %s: %s", ro.State, ro.Phase, ro.Message)
		}
		return nil
	})
	return ro
}

// Images maps each node to the images of its running containers.
func (f *Fleet) Images(nodes ...string) map[string][]string {
	out := map[string][]string{}
	for _, n := range nodes {
		for _, c := range f.Containers(n) {
			if c.State == "running" {
				out[n] = append(out[n], c.Image)
			}
		}
	}
	return out
}

// Events lists the deployment's events, only those of the given types if any.
func (f *Fleet) Events(deployment string, types ...string) []api.Event {
	f.t.Helper()
	evs, err := f.Client.ListEvents(context.Background(), api.DefaultProject, deployment, 0, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	if len(types) == 0 {
		return evs
	}
	var out []api.Event
	for _, e := range evs {
		for _, t := range types {
			if e.Type == t {
				out = append(out, e)
			}
		}
	}
	return out
}
