package agent_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/fakert"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/servertest"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// tickerClock is the test's fake clock as the agent sees it: it says when
// the agent armed a ticker of a given period, so that the test moves time
// only once the agent's heartbeat ticker exists.
type tickerClock struct {
	*clockwork.FakeClock
	mu      sync.Mutex
	tickers map[time.Duration]int
}

func (c *tickerClock) NewTicker(d time.Duration) clockwork.Ticker {
	t := c.FakeClock.NewTicker(d)
	c.mu.Lock()
	c.tickers[d]++
	c.mu.Unlock()
	return t
}

func (c *tickerClock) armed(d time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tickers[d]
}

// The agent renews its certificate at its renewal point, a moment between
// half and four fifths of its life, on the agent's clock, and keeps its
// stream through it: no new connection, no new session, and the server
// hears every heartbeat, before, during and after the renewal. The server
// and the agent share one fake clock, moved a heartbeat interval at a time;
// after each step the server must have recorded a heartbeat at that very
// time. The certificates are real, and TLS checks them against the real
// time: they live an hour, the renewal happens about half an hour in on the
// fake clock.
func TestRenewalKeepsTheStream(t *testing.T) {
	const heartbeat = time.Minute
	fake := clockwork.NewFakeClockAt(time.Now())
	clock := &tickerClock{FakeClock: fake, tickers: map[time.Duration]int{}}
	f := servertest.Start(t, func(c *server.Config) {
		c.HeartbeatInterval, c.MissedHeartbeats, c.NodeCertTTL, c.Clock = heartbeat, 3, time.Hour, fake
	})
	ctx := context.Background()
	tok, err := f.Client.CreateToken(ctx, api.TokenRequest{Uses: 1})
	if err != nil {
		t.Fatal(err)
	}

	var dials, connects, disconnects atomic.Int64
	type renewal struct {
		cert *x509.Certificate
		at   time.Time // on the fake clock
	}
	renewals := make(chan renewal, 16)
	dir := t.TempDir()
	cfg := agent.DefaultConfig()
	cfg.Server, cfg.Token, cfg.DataDir, cfg.Name, cfg.Runtime = f.AgentAddr, tok.Token, dir, "edge", fakert.New()
	cfg.ResyncInterval, cfg.Clock = 200*time.Millisecond, clock
	cfg.Hooks.Dialer = func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	cfg.Hooks.OnConnected = func(string) { connects.Add(1) }
	cfg.Hooks.OnDisconnected = func(error) { disconnects.Add(1) }
	cfg.Hooks.OnRenewed = func(c *x509.Certificate) {
		select {
		case renewals <- renewal{c, fake.Now()}:
		default: // the test reads the first few only
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })

	testenv.Eventually(t, within, "the agent to connect and arm its heartbeat ticker", func() error {
		if connects.Load() != 1 || clock.armed(heartbeat) != 1 {
			return fmt.Errorf("%d sessions, %d heartbeat tickers", connects.Load(), clock.armed(heartbeat))
		}
		return nil
	})
	first, err := pki.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	issued := first.Leaf.NotBefore.Add(5 * time.Minute) // NotBefore is backdated 5 minutes
	renewAt := first.RenewAt()
	point := float64(renewAt.Sub(issued)) / float64(first.NotAfter.Sub(issued))
	if point < 0.5 || point > 0.8 {
		t.Fatalf("the certificate renews at %.3f of its life; want between 0.5 and 0.8", point)
	}
	dialed := dials.Load()

	// Step a heartbeat at a time, until two heartbeats after the renewal.
	var got *renewal
	start, steps := fake.Now(), 0
	for after := 0; after < 2; steps++ {
		fake.Advance(heartbeat)
		now := fake.Now()
		testenv.Eventually(t, within, "a heartbeat at "+now.Format(time.TimeOnly)+" on the fake clock", func() error {
			n, err := f.Client.GetNode(ctx, "edge")
			if err != nil {
				return err
			}
			if n.State != api.NodeReady || !n.LastSeen.Equal(now) {
				return fmt.Errorf("node %s, last heard at %s", n.State, n.LastSeen.Format(time.TimeOnly))
			}
			return nil
		})
		if got == nil && !now.Before(renewAt) {
			testenv.Eventually(t, within, "the renewal", func() error {
				select {
				case r := <-renewals:
					got = &r
					return nil
				default:
					return errors.New("none yet")
				}
			})
		}
		if got == nil {
			select {
			case r := <-renewals:
				t.Fatalf("renewed at %v on the fake clock, before its renewal point %v", r.at, renewAt)
			default:
			}
		} else {
			after++
		}
	}
	// Real time moved by seconds only: the new certificate may expire in
	// the same second as the first.
	if got.at.Before(renewAt) || got.cert.Equal(first.Leaf) || got.cert.NotAfter.Before(first.NotAfter) {
		t.Errorf("renewed at %v, a certificate expiring %v; want at or after %v, a new certificate expiring no earlier than %v",
			got.at, got.cert.NotAfter, renewAt, first.NotAfter)
	}
	t.Logf("renewal point %.3f of the certificate's life; renewed at heartbeat step %d of %d, every one heard", point,
		int(got.at.Sub(start)/heartbeat), steps)
	renewed, err := pki.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.NodeID != first.NodeID || renewed.Leaf.Equal(first.Leaf) {
		t.Errorf("stored identity: node %s, renewed %v; want node %s with a new certificate", renewed.NodeID, !renewed.Leaf.Equal(first.Leaf), first.NodeID)
	}
	if d, c, dc := dials.Load()-dialed, connects.Load(), disconnects.Load(); d != 0 || c != 1 || dc != 0 {
		t.Errorf("through the renewal: %d new connections, %d sessions, %d ended; want 0, 1, 0: the stream stays up", d, c, dc)
	}
}
