package harness

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dfclient "github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/pgtest"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// Replica is one server process of a fleet of replicas on PostgreSQL.
type Replica struct {
	Name      string // r0, r1, ...
	Dir       string // its data dir
	APIAddr   string
	AgentAddr string
	Proc      *Proc            // the process now or last running
	Client    *dfclient.Client // an admin's, of its API
	args      []string         // the flags it starts with, the same at every start
}

// NewCluster starts n server replicas on one new PostgreSQL database
// (pgtest: the package's TestMain must be Main, which stops it), each with
// its own data dir and addresses, the first's key file given to the others,
// with a 1 s heartbeat and no agents, after opts changed the fleet (such as
// its ServerArgs, given to every replica). The fleet's Server, APIAddr,
// AgentAddr and Client are the first replica's until Use chooses another;
// its agents are given every replica's agent address.
func NewCluster(t *testing.T, n int, opts ...func(*Fleet)) *Fleet {
	t.Helper()
	f := newFleet(t, opts)
	f.Store = pgtest.DSN(t)
	for i := 0; i < n; i++ {
		r := &Replica{Name: fmt.Sprintf("r%d", i), Dir: filepath.Join(f.Dir, fmt.Sprintf("server-%d", i)),
			APIAddr: testenv.FreeAddr(t), AgentAddr: testenv.FreeAddr(t)}
		if i == 0 {
			// The CLI's CA and token files are the first replica's.
			r.Dir = filepath.Join(f.Dir, "server")
		}
		r.args = []string{"server", "--data-dir", r.Dir, "--store", f.Store,
			"--api-addr", r.APIAddr, "--agent-addr", r.AgentAddr, "--heartbeat-interval", f.Heartbeat.String(),
			"--image-policy", "unpinned"}
		if i > 0 {
			r.args = append(r.args, "--key-file", filepath.Join(f.Replicas[0].Dir, server.DefaultKeyFile))
		}
		r.args = append(r.args, f.ServerArgs...)
		f.Replicas = append(f.Replicas, r)
		// One at a time: the first creates the schema, the CA and the key
		// file the others need.
		f.StartReplica(r)
	}
	f.Use(f.Replicas[0])
	t.Cleanup(f.removeContainers)
	return f
}

// StartReplica starts the replica with the flags it was first given, and
// waits until its API answers.
func (f *Fleet) StartReplica(r *Replica) {
	f.t.Helper()
	r.Proc = Start(f.t, "replica "+r.Name, r.args...)
	r.Client = f.waitAPI("replica "+r.Name, r.Proc, r.Dir, r.APIAddr)
	if f.Server == nil || f.APIAddr == r.APIAddr {
		f.Use(r)
	}
}

// Use makes r the replica the fleet's Server, APIAddr, AgentAddr, Client,
// CLI and the helpers over them use.
func (f *Fleet) Use(r *Replica) {
	f.Server, f.APIAddr, f.AgentAddr, f.Client = r.Proc, r.APIAddr, r.AgentAddr, r.Client
}

// CLIOn runs a CLI command against replica r and returns its output and exit code.
func (f *Fleet) CLIOn(r *Replica, stdin string, args ...string) (string, int) {
	f.t.Helper()
	return f.cli(r.APIAddr, stdin, args...)
}

// ApplyOn applies the YAML with the CLI through replica r and returns its output.
func (f *Fleet) ApplyOn(r *Replica, yaml string) string {
	f.t.Helper()
	out, code := f.CLIOn(r, yaml, "apply", "-f", "-")
	if code != 0 {
		f.t.Fatalf("apply through %s: exit %d: %s", r.Name, code, out)
	}
	return out
}

// agentServers is the --server of the fleet's agents: every replica's
// agent address, or the single server's.
func (f *Fleet) agentServers() string {
	if len(f.Replicas) == 0 {
		return f.AgentAddr
	}
	var addrs []string
	for _, r := range f.Replicas {
		addrs = append(addrs, r.AgentAddr)
	}
	return strings.Join(addrs, ",")
}

// Running reports whether the replica's process is running.
func (r *Replica) Running() bool {
	done, _ := r.Proc.Exited(0)
	return !done
}

// logTime is the time of a slog text line: time=2006-01-02T15:04:05.000Z07:00 ...
var logTime = regexp.MustCompile(`^time=(\S+) `)

// LogLines returns the lines of out with msg=msg (quoted by slog when it
// has spaces) logged at or after since, with their times.
func LogLines(out, msg string, since time.Time) (lines []string, times []time.Time) {
	m := "msg=" + msg
	if strings.ContainsAny(msg, " =\"") {
		m = fmt.Sprintf("msg=%q", msg)
	}
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, " "+m+" ") && !strings.HasSuffix(l, " "+m) {
			continue
		}
		sm := logTime.FindStringSubmatch(l)
		if sm == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, sm[1])
		if err != nil || at.Before(since) {
			continue
		}
		lines, times = append(lines, l), append(times, at)
	}
	return lines, times
}

// Leading reports whether the replica's process runs and leads by its log:
// its last "leading" line comes after its last "stopped leading".
func (r *Replica) Leading() bool {
	if !r.Running() {
		return false
	}
	out := r.Proc.Out.String()
	return strings.LastIndex(out, "msg=leading ") > strings.LastIndex(out, `msg="stopped leading"`)
}

// WaitLeader waits until exactly one running replica leads, and returns it.
func (f *Fleet) WaitLeader(within time.Duration) *Replica {
	f.t.Helper()
	var leader *Replica
	testenv.Eventually(f.t, within, "one replica to lead", func() error {
		var ls []string
		leader = nil
		for _, r := range f.Replicas {
			if r.Leading() {
				ls, leader = append(ls, r.Name), r
			}
		}
		if len(ls) != 1 {
			return fmt.Errorf("replicas leading: %v", ls)
		}
		return nil
	})
	return leader
}

// ReplicaAt returns the replica whose agent address is addr, nil if none.
func (f *Fleet) ReplicaAt(addr string) *Replica {
	for _, r := range f.Replicas {
		if r.AgentAddr == addr {
			return r
		}
	}
	return nil
}

// AgentServer returns the server the agent named name last connected to
// (its last log line "connected server=ADDR"), and when; empty if none.
func (f *Fleet) AgentServer(name string) (addr string, at time.Time) {
	lines, times := LogLines(f.Agents[name].Out.String(), "connected", time.Time{})
	if len(lines) == 0 {
		return "", time.Time{}
	}
	l := lines[len(lines)-1]
	if i := strings.Index(l, " server="); i >= 0 {
		addr, _, _ = strings.Cut(l[i+len(" server="):], " ")
	}
	return addr, times[len(times)-1]
}
