package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/version"
)

// streamWindow is the static HTTP/2 window of the agent's connection.
const streamWindow = 1 << 20

// ErrGoAway is wrapped by the error of a session the server ended with
// GoAway (Hooks.OnDisconnected): it told the agent to move to another server.
var ErrGoAway = errors.New("the server asked the agent to move to another server")

// goAwayError ends a session whose server sent GoAway: the agent is to
// connect to another server within the time it says.
type goAwayError struct {
	reason string
	within time.Duration
}

func (e *goAwayError) Error() string { return fmt.Sprintf("%v (%s)", ErrGoAway, e.reason) }
func (e *goAwayError) Unwrap() error { return ErrGoAway }

func newGoAwayError(g *agentproto.GoAway) *goAwayError {
	return &goAwayError{reason: g.Reason, within: time.Duration(max(g.ReconnectWithinMs, 0)) * time.Millisecond}
}

// session runs one stream to the server at ep until it breaks, the server
// sends GoAway (a *goAwayError) or ctx ends. It reports whether the server
// welcomed the agent, which resets the backoff.
func (a *Agent) session(ctx context.Context, ep endpoint, rec *reconciler, pulls *puller, log *slog.Logger) (bool, error) {
	conn, err := grpc.NewClient(target(ep), a.dialOptions(
		grpc.WithTransportCredentials(credentials.NewTLS(pki.RenewingClientTLS(a.identity, ep.host))),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// As on the server (internal/server.listen): TLS buffers records
		// already, the write buffer is pooled, and static windows stop
		// gRPC's bandwidth-estimation PINGs. A desired state larger than
		// the window still arrives, after a window update.
		grpc.WithReadBufferSize(0),
		grpc.WithSharedWriteBuffer(true),
		grpc.WithStaticStreamWindowSize(streamWindow),
		grpc.WithStaticConnWindowSize(streamWindow),
		// Explicit rather than gRPC's default of 4 MiB: the server keeps
		// each node's desired state below it, and refuses at apply a
		// deployment that would not fit.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(agentproto.MaxServerMessage)))...)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := agentproto.NewAgentClient(conn).Connect(ctx)
	if err != nil {
		return false, err
	}
	var sendMu sync.Mutex // a gRPC stream allows one sender at a time
	send := func(m *agentproto.AgentMessage) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	rec.newStream()
	gen, statuses := rec.snapshot()
	applied, _ := rec.stateSeq()
	if err := send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Hello{Hello: &agentproto.Hello{
		ProtocolVersion: agentproto.Version, Facts: a.facts(ctx), Generation: gen, Instances: statuses, StateSeq: applied}}}); err != nil {
		return false, err
	}
	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	if g := first.GetGoaway(); g != nil {
		return false, newGoAwayError(g)
	}
	welcome := first.GetWelcome()
	if welcome == nil {
		return false, errors.New("server did not answer hello with welcome")
	}
	// Every server since protocol version 1 says how often to beat: a
	// welcome without it is a broken server, not one to guess for.
	interval := time.Duration(welcome.HeartbeatIntervalMs) * time.Millisecond
	if interval <= 0 {
		return false, fmt.Errorf("server %s welcomed the agent without a heartbeat interval (%d ms)", ep.addr, welcome.HeartbeatIntervalMs)
	}
	log.Info("connected", "server", ep.addr, "heartbeat_interval", interval)
	if a.cfg.Hooks.OnConnected != nil {
		a.cfg.Hooks.OnConnected(ep.addr)
	}

	// The stream's goroutines: the first to end ends the session, and the
	// session returns only once all of them, and the pulls they started,
	// have ended, so nothing of it outlives Run.
	errc := make(chan error, 5)
	var wg sync.WaitGroup
	goStream := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- f()
		}()
	}
	soon := make(chan time.Duration, 1) // a renewal asked for by Trust
	goStream(func() error { return a.renewals(ctx, conn, soon) })
	goStream(func() error { return a.heartbeats(ctx, interval, rec, send) })
	goStream(func() error { return forwardStatuses(ctx, rec, send) })
	goStream(func() error {
		leaving := false // told to go: a later GoAway changes nothing
		for {
			msg, err := stream.Recv()
			if err != nil {
				return err
			}
			if g := msg.GetGoaway(); g != nil && !leaving {
				leaving = true
				// The agent keeps this stream, and its heartbeats, until
				// a random moment within what the server asked, then
				// moves: its node is never silent, and a server's agents
				// do not land on the others at once. Ending the session
				// closes the stream and its connection; the containers
				// run on.
				away := newGoAwayError(g)
				moveIn := a.servers.upTo(away.within)
				away.within = 0
				goStream(func() error {
					t := a.clock.NewTimer(moveIn)
					defer t.Stop()
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-t.Chan():
						return away
					}
				})
				continue
			}
			if tr := msg.GetTrust(); tr != nil {
				a.takeTrust(tr, soon)
				continue
			}
			if d := msg.GetDesired(); d != nil && rec.setDesired(d) {
				pulls.pull(ctx, d.PullImages, send)
				if err := send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Ack{Ack: &agentproto.Ack{Generation: d.Generation}}}); err != nil {
					return err
				}
				if a.cfg.Hooks.OnDesired != nil {
					a.cfg.Hooks.OnDesired(d.Generation, len(d.Instances))
				}
			}
		}
	})
	err = <-errc
	// Cancelling the stream's context ends Recv and every other goroutine.
	cancel()
	wg.Wait()
	pulls.wait()
	if a.cfg.Hooks.OnDisconnected != nil {
		a.cfg.Hooks.OnDisconnected(err)
	}
	return true, err
}

// target is the gRPC target of ep: its address as it is, for the agent
// chose it (serverList) and gRPC must not resolve it again.
func target(ep endpoint) string { return "passthrough:///" + ep.addr }

func (a *Agent) heartbeats(ctx context.Context, interval time.Duration, rec *reconciler, send func(*agentproto.AgentMessage) error) error {
	t := a.clock.NewTicker(interval)
	defer t.Stop()
	usage := a.cfg.Hooks.HostUsage
	if usage == nil {
		var cpu cpuSampler
		usage = func() *agentproto.Usage { return hostUsage(&cpu) }
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.Chan():
		}
		u := usage()
		u.Containers = int32(rec.running())
		applied, _ := rec.stateSeq()
		hb := &agentproto.Heartbeat{Usage: u, Error: rec.hostError(), StateSeq: applied}
		if rec.takeFactsChanged() {
			hb.Facts = a.facts(ctx)
		}
		if err := send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Heartbeat{Heartbeat: hb}}); err != nil {
			return fmt.Errorf("sending heartbeat: %w", err)
		}
	}
}

func forwardStatuses(ctx context.Context, rec *reconciler, send func(*agentproto.AgentMessage) error) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-rec.outboxReady:
		}
		for _, st := range rec.drainOutbox() {
			if err := send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Status{Status: st}}); err != nil {
				// Keep it for the next connection's hello.
				return fmt.Errorf("sending instance status: %w", err)
			}
		}
	}
}

// facts describes the host; Docker's part is left empty while Docker is unreachable.
func (a *Agent) facts(ctx context.Context) *agentproto.Facts {
	f := &agentproto.Facts{AgentVersion: version.Version, Os: runtime.GOOS, Arch: runtime.GOARCH}
	f.Hostname, _ = os.Hostname()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if info, err := a.cfg.Runtime.Info(ctx); err == nil {
		f.DockerVersion, f.Cpus, f.MemoryBytes = info.RuntimeVersion, int32(info.CPUs), info.MemoryBytes
		if info.OS != "" {
			f.Os = info.OS
		}
		if info.Arch != "" {
			f.Arch = info.Arch
		}
	}
	return f
}
