package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/agentsvc"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/pki/pkitest"
	"github.com/dockfleet/dockfleet/internal/sim"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// The abuse tests run a real server (SQLite, TLS, gRPC) in this process,
// twenty well-behaved simulated agents (internal/sim) dialing from
// goodSource, and one abusive client from a loopback address of its own.
// Each checks what the well-behaved agents saw while the abuse went on:
// every node stayed ready with its heartbeats arriving, and a deployment
// applied in the middle of it reached every agent, which acked it; and
// that the abuser was cut off as it should be. The bounds detect a stalled
// or starved fleet, not a slow one, so that they hold on a loaded CI
// machine.
const (
	goodAgents    = 20
	goodSource    = "127.0.0.2"
	testHeartbeat = 200 * time.Millisecond
	// missedBeats is how many heartbeats a good node may miss: the server
	// is told the same, so a node that stays ready was never silent for
	// longer than staleAfter.
	missedBeats = 15
	staleAfter  = missedBeats * testHeartbeat
	// abuseFor is how long the good agents are watched under abuse, at least.
	abuseFor = 3 * time.Second
	// ackWithin bounds the time from an apply to every good agent's ack.
	ackWithin = 30 * time.Second
)

// abuseTokenUses is more than every test's enrollments together.
const abuseTokenUses = 10_000

type abuseFleet struct {
	srv       *Server // nil when the server runs in another process
	agentAddr string
	api       *client.Client
	token     string // an enrollment token of abuseTokenUses uses that lets agents choose their labels
	host      string // the server name agents verify
	logs      testenv.Buffer
	// events are the good agents' (sim.Event lines).
	events testenv.Buffer
}

// startAbuseFleet starts a server with cfg's limits, in a new data
// directory unless cfg names one; its log, from Info up, goes to f.logs.
func startAbuseFleet(t *testing.T, cfg Config) *abuseFleet {
	t.Helper()
	f := &abuseFleet{}
	cfg = testConfig(t, cfg)
	cfg.HeartbeatInterval, cfg.MissedHeartbeats = testHeartbeat, missedBeats
	cfg.Logger = slog.New(slog.NewTextHandler(&f.logs, nil))
	f.srv, _ = newTestServerConfig(t, cfg)
	runTestServer(t, f.srv)
	f.useServer(t, cfg.DataDir, f.srv.APIURL(), f.srv.AgentAddr())
	return f
}

// useServer points f at the server of dataDir serving the API at apiURL
// and agents at agentAddr, and makes f's enrollment token.
func (f *abuseFleet) useServer(t *testing.T, dataDir, apiURL, agentAddr string) {
	t.Helper()
	f.agentAddr = agentAddr
	f.host, _, _ = net.SplitHostPort(agentAddr)
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	if f.api, err = client.New(client.Config{Addr: apiURL, Token: strings.TrimSpace(string(tok)), CACertFile: filepath.Join(dataDir, "ca.crt")}); err != nil {
		t.Fatal(err)
	}
	et, err := f.api.CreateToken(context.Background(), api.TokenRequest{Uses: abuseTokenUses, AgentLabels: []string{"*"}})
	if err != nil {
		t.Fatal(err)
	}
	f.token = et.Token
}

// simRun is a running simulation; the test's cleanup stops it.
type simRun struct{ done chan error }

func (f *abuseFleet) runSim(t *testing.T, cfg sim.Config) *simRun {
	t.Helper()
	cfg.Server, cfg.Token, cfg.DataDir = f.agentAddr, f.token, t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	r := &simRun{done: make(chan error, 1)}
	go func() { r.done <- sim.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("simulated agents %s: %v", cfg.NamePrefix, err)
		}
	})
	return r
}

// startGoodAgents runs the good agents, named good-1 to good-20, and
// waits until they are all ready.
func (f *abuseFleet) startGoodAgents(t *testing.T) {
	t.Helper()
	r := f.runSim(t, sim.Config{Agents: goodAgents, NamePrefix: "good", Labels: map[string]string{"role": "good"},
		SourceIPs: []string{goodSource}, Events: &f.events})
	f.waitReady(t, r, "good-", goodAgents)
}

// waitReady waits until n nodes named prefix... are ready, while r runs.
func (f *abuseFleet) waitReady(t *testing.T, r *simRun, prefix string, n int) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, fmt.Sprintf("%d nodes %s* to be ready", n, prefix), func() error {
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("waiting for %d nodes %s* to be ready: the simulation ended: %v", n, prefix, err)
		default:
		}
		nodes, err := f.api.ListNodes(context.Background())
		if err != nil {
			return err
		}
		ready := 0
		for _, nd := range nodes {
			if strings.HasPrefix(nd.Name, prefix) && nd.State == api.NodeReady {
				ready++
			}
		}
		if ready != n {
			return fmt.Errorf("%d of %d ready", ready, n)
		}
		return nil
	})
}

// checkGoodAgents watches the good nodes for abuseFor at least, and
// meanwhile applies a deployment on all of them and waits for every good
// agent to ack the desired state that carries its instance.
func (f *abuseFleet) checkGoodAgents(t *testing.T) {
	t.Helper()
	start := time.Now()
	stop := make(chan struct{})
	problems := f.watchGood(stop)

	applied := time.Now()
	doc := "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: web}\n" +
		"spec:\n  mode: global\n  selector: {matchLabels: {role: good}}\n  container: {image: hello:v1}\n" +
		"  update: {batchSize: 100%, minHealthyTime: 0s}\n"
	if _, err := f.api.Apply(context.Background(), "web.yaml", "", []byte(doc)); err != nil {
		t.Errorf("apply: %v", err)
	}
	for deadline := time.Now().Add(ackWithin); ; {
		acked := f.acked(t, applied)
		if len(acked) == goodAgents {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d of %d good agents acked the desired state within %s of the apply: %v", len(acked), goodAgents, ackWithin, acked)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(abuseFor - time.Since(start))
	close(stop)
	for _, p := range <-problems {
		t.Error(p)
	}
}

// watchGood lists the nodes every 100ms until stop is closed, then sends
// what was wrong: a good node not ready or unseen for longer than
// staleAfter, or the API failing. It reports each kind of problem once.
func (f *abuseFleet) watchGood(stop <-chan struct{}) <-chan []string {
	out := make(chan []string, 1)
	go func() {
		seen := map[string]bool{}
		var problems []string
		report := func(key, format string, a ...any) {
			if !seen[key] {
				seen[key] = true
				problems = append(problems, fmt.Sprintf(format, a...))
			}
		}
		polls := 0
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				if polls == 0 {
					problems = append(problems, "the good nodes were never listed")
				}
				out <- problems
				return
			case <-tick.C:
			}
			asked := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			nodes, err := f.api.ListNodes(ctx)
			cancel()
			if err != nil {
				report("api", "listing nodes under abuse: %v", err)
				continue
			}
			polls++
			good := 0
			for _, n := range nodes {
				if !strings.HasPrefix(n.Name, "good-") {
					continue
				}
				good++
				if n.State != api.NodeReady {
					report("state "+n.Name, "good node %s is %s under abuse; want ready", n.Name, n.State)
				}
				if age := asked.Sub(n.LastSeen); age > staleAfter {
					report("seen "+n.Name, "good node %s was last seen %s before a listing under abuse; want at most %s (%d heartbeats)",
						n.Name, age.Round(time.Millisecond), staleAfter, missedBeats)
				}
			}
			if good != goodAgents {
				report("count", "%d good nodes listed under abuse; want %d", good, goodAgents)
			}
		}
	}()
	return out
}

// acked returns the good agents that acked, since t0, a desired state
// carrying one instance.
func (f *abuseFleet) acked(t *testing.T, t0 time.Time) []string {
	t.Helper()
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(f.events.String()))
	for sc.Scan() {
		var e sim.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event line %q: %v", sc.Text(), err)
		}
		if e.Event == "desired" && e.Instances == 1 && e.T >= t0.UnixNano() && !seen[e.Agent] {
			seen[e.Agent] = true
			out = append(out, e.Agent)
		}
	}
	return out
}

// abuse runs fn until the returned stop is called, which cancels fn's
// context and waits for it to return.
func abuse(fn func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// dialFrom dials from the loopback address src.
func dialFrom(src string) func(context.Context, string) (net.Conn, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}
}

// conn is a gRPC client connection to the agent endpoint from src.
func (f *abuseFleet) conn(t *testing.T, src string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(f.agentAddr, grpc.WithTransportCredentials(creds), grpc.WithContextDialer(dialFrom(src)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// enroll enrolls a node called name from src with the raw protocol and
// returns the credentials of its stream.
func (f *abuseFleet) enroll(t *testing.T, name, src string) credentials.TransportCredentials {
	t.Helper()
	fp, _, _, err := pki.ParseEnrollToken(f.token)
	if err != nil {
		t.Fatal(err)
	}
	key, csr := pkitest.NodeCSR(t)
	conn := f.conn(t, src, credentials.NewTLS(pki.EnrollClientTLS(fp, f.host)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := agentproto.NewAgentClient(conn).Enroll(ctx, &agentproto.EnrollRequest{
		ProtocolVersion: agentproto.Version, Token: f.token, Csr: csr, Name: name})
	if err != nil {
		t.Fatalf("enrolling %s: %v", name, err)
	}
	conn.Close()
	id, err := pki.SaveIdentity(t.TempDir(), key, resp.Certificate, resp.CaCertificate)
	if err != nil {
		t.Fatal(err)
	}
	return credentials.NewTLS(pki.AgentClientTLS(id, f.host))
}

// openStream opens an agent stream on conn, says hello as an agent does
// and waits for the welcome.
func openStream(ctx context.Context, conn *grpc.ClientConn) (agentproto.Agent_ConnectClient, error) {
	stream, err := agentproto.NewAgentClient(conn).Connect(ctx)
	if err != nil {
		return nil, err
	}
	hello := &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Hello{Hello: &agentproto.Hello{ProtocolVersion: agentproto.Version}}}
	// A failed send ends in io.EOF; the stream's status comes from Recv.
	if err := stream.Send(hello); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	m, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if m.GetWelcome() == nil {
		return nil, fmt.Errorf("the server answered hello with %v; want welcome", m)
	}
	return stream, nil
}

// recvUntilError reads what the server sends until the stream ends, and
// returns how it ended.
func recvUntilError(stream agentproto.Agent_ConnectClient) error {
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

// countLines counts the lines of the server's log that contain s.
func (f *abuseFleet) countLines(s string) int {
	return strings.Count(f.logs.String(), s)
}

// maxLogLines is how many lines a sparse log may write in d.
func maxLogLines(d time.Duration) int {
	return 1 + int(d/agentsvc.LimitLogInterval)
}

// A client that sends garbage, on a bare TCP connection or after a TLS
// handshake in place of HTTP/2, has its connection closed; beyond its
// source's rate, before the TLS handshake.
func TestGarbageConnectionsAreClosed(t *testing.T) {
	cfg := Config{AgentSourceRate: 20, AgentSourceBurst: 100}
	f := startAbuseFleet(t, cfg)
	f.startGoodAgents(t)

	const src = "127.0.0.10"
	fp, _, _, err := pki.ParseEnrollToken(f.token)
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 16<<10)
	rand.Read(garbage)
	// Not a TLS record's first byte: a random record header could announce
	// more bytes than follow, and the server would wait for them.
	garbage[0] = 0
	var attempts, keptOpen, handshakes int
	began := time.Now()
	stop := abuse(func(ctx context.Context) {
		for i := 0; ctx.Err() == nil; i++ {
			raw, err := dialFrom(src)(ctx, f.srv.AgentAddr())
			if err != nil {
				continue
			}
			attempts++
			var c net.Conn = raw
			if i%2 == 1 {
				tc := tls.Client(raw, pki.EnrollClientTLS(fp, f.host))
				if tc.HandshakeContext(ctx) == nil {
					handshakes++
				}
				c = tc
			}
			c.Write(garbage)
			raw.SetDeadline(time.Now().Add(30 * time.Second))
			var ne net.Error
			if _, err := io.Copy(io.Discard, c); errors.As(err, &ne) && ne.Timeout() {
				keptOpen++
			}
			raw.Close()
		}
	})
	f.checkGoodAgents(t)
	stop()

	if attempts == 0 {
		t.Fatal("the abuser made no connection")
	}
	if keptOpen > 0 {
		t.Errorf("the server kept %d of %d garbage connections open for 30s; want it to close them", keptOpen, attempts)
	}
	if most := cfg.AgentSourceBurst + int(cfg.AgentSourceRate*time.Since(began).Seconds()) + 1; handshakes > most {
		t.Errorf("the server completed %d TLS handshakes with the abuser; its source limit allows %d", handshakes, most)
	}
	t.Logf("%d garbage connections, %d of them after a TLS handshake", attempts, handshakes)
}

// A message over maxAgentMessage ends its stream with ResourceExhausted,
// and only the stream: the connection serves the next one.
func TestOversizeMessageEndsOnlyItsStream(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	f.startGoodAgents(t)

	const src = "127.0.0.10"
	creds := f.enroll(t, "abuser", src)
	var dials atomic.Int64
	conn, err := grpc.NewClient(f.srv.AgentAddr(), grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			return dialFrom(src)(ctx, addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	huge := &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Status{Status: &agentproto.InstanceStatus{
		InstanceId: "x", State: "running", Reason: strings.Repeat("x", maxAgentMessage)}}}
	var ends []error
	stop := abuse(func(ctx context.Context) {
		// Two rounds at least: the second stream shows the connection
		// lived on. They are spaced out: what is tested is the size
		// limit, not the call rate limit.
		for round := 0; round < 2 || ctx.Err() == nil; round++ {
			if round > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			stream, err := openStream(sctx, conn)
			if err != nil {
				cancel()
				t.Errorf("round %d: opening a stream on the abuser's connection: %v", round+1, err)
				return
			}
			if err := stream.Send(huge); err != nil && !errors.Is(err, io.EOF) {
				t.Errorf("round %d: sending the oversize message: %v", round+1, err)
			}
			ends = append(ends, recvUntilError(stream))
			cancel()
		}
	})
	f.checkGoodAgents(t)
	stop()

	if len(ends) < 2 {
		t.Fatalf("%d oversize messages sent; want 2 at least", len(ends))
	}
	for i, err := range ends {
		if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "larger than max") {
			t.Errorf("stream %d ended with %v; want ResourceExhausted saying the message is larger than the maximum", i+1, err)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the abuser dialed %d times for %d streams; want 1: an oversize message must end its stream only", n, len(ends))
	}
}

// A stream that floods messages is closed with ResourceExhausted once it
// has sent its burst, and the server says so once, not once a stream.
// The budget is the node's: the streams it opens after the flood find it
// empty, and are closed as soon as they send more than it refilled
// (review finding 4: a new stream refilled it).
func TestMessageFloodClosesTheStream(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	f.startGoodAgents(t)

	const src = "127.0.0.10"
	conn := f.conn(t, src, f.enroll(t, "abuser", src))
	heartbeat := &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Heartbeat{Heartbeat: &agentproto.Heartbeat{}}}
	// reconnectBurst is what each stream after the flood sends: well
	// under a fresh burst, well over what the budget refills between two.
	const reconnectBurst = agentsvc.DefaultMessageBurst / 5
	var floodSent int
	var ends []error
	began := time.Now()
	stop := abuse(func(ctx context.Context) {
		for round := 0; round < 3 || ctx.Err() == nil; round++ {
			if round > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			stream, err := openStream(sctx, conn)
			if err != nil {
				cancel()
				t.Errorf("stream %d: opening it: %v", round+1, err)
				return
			}
			if round == 0 {
				for ; floodSent < 100*agentsvc.DefaultMessageBurst && stream.Send(heartbeat) == nil; floodSent++ {
				}
			} else {
				for i := 0; i < reconnectBurst && stream.Send(heartbeat) == nil; i++ {
				}
				stream.CloseSend()
			}
			ends = append(ends, recvUntilError(stream))
			cancel()
		}
	})
	f.checkGoodAgents(t)
	stop()
	elapsed := time.Since(began)

	for i, err := range ends {
		if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "messages at once") {
			what := "the flood"
			if i > 0 {
				what = fmt.Sprintf("stream %d after the flood, with %d messages,", i, reconnectBurst)
			}
			t.Errorf("%s ended with %v; want ResourceExhausted saying the node sent too many messages", what, err)
		}
	}
	if floodSent < agentsvc.DefaultMessageBurst {
		t.Errorf("the flood's stream was closed after %d messages; want %d at least (the burst)", floodSent, agentsvc.DefaultMessageBurst)
	}
	n := f.countLines("closing an agent stream")
	if n < 1 || n > maxLogLines(elapsed) {
		t.Errorf("the server logged %d lines about %d closed streams in %s; want 1 to %d", n, len(ends), elapsed.Round(time.Second), maxLogLines(elapsed))
	}
}

// A client reconnecting in a tight loop gets no more connections than its
// source's limit, and well-behaved agents behind the same address back
// off and get in once it stops.
func TestReconnectLoopIsLimitedPerSource(t *testing.T) {
	cfg := Config{AgentSourceRate: 5, AgentSourceBurst: 50}
	f := startAbuseFleet(t, cfg)
	f.startGoodAgents(t)

	const src = "127.0.0.11"
	began := time.Now() // before the abuser's first connection
	creds := f.enroll(t, "abuser", src)
	var welcomed, refused int
	var wrong []error
	firstRefusal := make(chan struct{})
	stop := abuse(func(ctx context.Context) {
		for ctx.Err() == nil {
			conn, err := grpc.NewClient(f.srv.AgentAddr(), grpc.WithTransportCredentials(creds), grpc.WithContextDialer(dialFrom(src)))
			if err != nil {
				t.Error(err)
				return
			}
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err = openStream(sctx, conn)
			cancel()
			conn.Close()
			switch code := status.Code(err); {
			case err == nil:
				welcomed++
			case ctx.Err() != nil:
			case code == codes.Unavailable || code == codes.ResourceExhausted:
				if refused == 0 {
					close(firstRefusal)
				}
				refused++
			default:
				wrong = append(wrong, err)
			}
		}
	})
	select {
	case <-firstRefusal:
	case <-time.After(60 * time.Second):
		stop()
		t.Fatalf("the abuser reconnected %d times in a tight loop and was never refused", welcomed)
	}
	// An agent behind the abuser's address (one NAT) starts now.
	neighbour := f.runSim(t, sim.Config{Agents: 1, NamePrefix: "nat", SourceIPs: []string{src}, MaxBackoff: time.Second})
	f.checkGoodAgents(t)
	stop()
	elapsed := time.Since(began)
	f.waitReady(t, neighbour, "nat-", 1)

	if most := cfg.AgentSourceBurst + int(cfg.AgentSourceRate*elapsed.Seconds()) + 1; welcomed > most {
		t.Errorf("the abuser was welcomed %d times in %s; its source limit allows %d", welcomed, elapsed.Round(time.Second), most)
	}
	for _, err := range wrong {
		t.Errorf("a refused reconnection failed with %v; want Unavailable (connection reset) or ResourceExhausted, which agents retry", err)
	}
	n := f.countLines("resetting a new agent connection") + f.countLines("refusing an agent call")
	if n < 1 || n > 2*maxLogLines(elapsed) {
		t.Errorf("the server logged %d lines about %d refusals in %s; want 1 to %d", n, refused, elapsed.Round(time.Second), 2*maxLogLines(elapsed))
	}
	t.Logf("the abuser was welcomed %d times and refused %d times", welcomed, refused)
}

// A flood of enrollments with bad tokens from one address is refused
// cheaply after a few failures, while agents elsewhere enroll as usual;
// no secret reaches the log.
func TestBadTokenFloodDoesNotStopEnrollment(t *testing.T) {
	f := startAbuseFleet(t, Config{})

	const src, workers = "127.0.0.12", 4
	fp, tokenID, goodSecret, err := pki.ParseEnrollToken(f.token)
	if err != nil {
		t.Fatal(err)
	}
	_, csr := pkitest.NodeCSR(t)
	enroll := agentproto.NewAgentClient(f.conn(t, src, credentials.NewTLS(pki.EnrollClientTLS(fp, f.host))))
	var (
		mu           sync.Mutex
		codesSeen    = map[codes.Code]int{}
		triedSecrets []string // of the attempts the server looked at
		saysWhy      bool     // a refusal said the source failed too often
	)
	began := time.Now()
	stop := abuse(func(ctx context.Context) {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					// The real token's ID with a guessed secret, or an unknown ID.
					id, secret := tokenID, pki.NewSecret()
					if i%2 == 1 {
						id = pki.NewTokenID()
					}
					_, err := enroll.Enroll(ctx, &agentproto.EnrollRequest{ProtocolVersion: agentproto.Version,
						Token: pki.FormatEnrollToken(fp, id, secret), Csr: csr, Name: fmt.Sprintf("guess-%d-%d", w, i)})
					if ctx.Err() != nil {
						return
					}
					st, _ := status.FromError(err)
					mu.Lock()
					codesSeen[st.Code()]++
					switch st.Code() {
					case codes.Unauthenticated:
						triedSecrets = append(triedSecrets, secret)
					case codes.ResourceExhausted:
						saysWhy = saysWhy || strings.Contains(st.Message(), "too many failed enrollments")
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	})
	// The good agents enroll, from their own address, during the flood.
	f.startGoodAgents(t)
	f.checkGoodAgents(t)
	stop()
	elapsed := time.Since(began)

	// Attempts in flight when the source ran out may fail too.
	most := agentsvc.EnrollFailureBurst + int(float64(agentsvc.EnrollFailureRate)*elapsed.Seconds()) + workers
	if n := codesSeen[codes.Unauthenticated]; n < 1 || n > most {
		t.Errorf("%d bad tokens were checked in %s; want 1 to %d: a source is slowed after %d failures",
			n, elapsed.Round(time.Second), most, agentsvc.EnrollFailureBurst)
	}
	if codesSeen[codes.ResourceExhausted] == 0 || !saysWhy {
		t.Errorf("answers to the flood by code: %v; want ResourceExhausted saying there were too many failed enrollments", codesSeen)
	}
	for c, n := range codesSeen {
		if c != codes.Unauthenticated && c != codes.ResourceExhausted {
			t.Errorf("%d bad enrollments failed with %s; want Unauthenticated or ResourceExhausted", n, c)
		}
	}
	logs := f.logs.String()
	for _, s := range append(triedSecrets, goodSecret) {
		if strings.Contains(logs, s) {
			t.Fatalf("the server log holds a token secret:\n%s", logs)
		}
	}
	if n, most := f.countLines("refusing enrollments from a source"), maxLogLines(elapsed); n > most {
		t.Errorf("the server logged %d lines about refused enrollments in %s; want %d at most", n, elapsed.Round(time.Second), most)
	}
	t.Logf("answers to the flood by code: %v", codesSeen)
}
