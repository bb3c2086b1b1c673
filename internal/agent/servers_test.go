package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/testenv"
)

// entries parses a --server value, failing the test if it is invalid.
func entries(t *testing.T, server string) []endpoint {
	t.Helper()
	eps, err := parseServers(server, nil)
	if err != nil {
		t.Fatal(err)
	}
	return eps
}

// noLookup fails a test that resolves a name: its entries are addresses.
func noLookup(t *testing.T) func(context.Context, string) ([]string, error) {
	return func(_ context.Context, host string) ([]string, error) {
		t.Errorf("resolved %q; want no lookup of an IP address", host)
		return nil, errors.New("no lookup")
	}
}

// addrs picks k times from l at now and returns the addresses.
func picks(l *serverList, now time.Time, k int) []string {
	var out []string
	for range k {
		ep, _ := l.pick(context.Background(), now)
		out = append(out, ep.addr)
	}
	return out
}

func TestParseServers(t *testing.T) {
	eps, err := parseServers("192.0.2.1:7401, https://fleet.example:7401,192.0.2.1:7401", []string{"192.0.2.2:7401,[2001:db8::1]:7401"})
	if err != nil {
		t.Fatal(err)
	}
	want := []endpoint{{"192.0.2.1:7401", "192.0.2.1"}, {"fleet.example:7401", "fleet.example"}, {"192.0.2.2:7401", "192.0.2.2"},
		{"[2001:db8::1]:7401", "2001:db8::1"}}
	if !slices.Equal(eps, want) {
		t.Errorf("got %v; want %v (in order, the repeat dropped)", eps, want)
	}
	if _, err := parseServers("192.0.2.1:7401,fleet.example", nil); err == nil || !strings.Contains(err.Error(), `--server "fleet.example" must name a host and port`) {
		t.Errorf("a list with an entry without port: %v; want an error naming the entry", err)
	}
}

// Each agent starts at an entry drawn uniformly, so a fleet spreads evenly:
// 10,000 agents over 4 servers put 2,500 on each, give or take a few
// standard deviations (43 agents).
func TestStartEntrySpread(t *testing.T) {
	const agents, servers = 10000, 4
	eps := entries(t, "192.0.2.1:7401,192.0.2.2:7401,192.0.2.3:7401,192.0.2.4:7401")
	count := map[string]int{}
	for range agents {
		l := newServerList(eps, noLookup(t), nil)
		ep, n := l.pick(context.Background(), time.Now())
		if n != servers {
			t.Fatalf("the list has %d endpoints; want %d", n, servers)
		}
		count[ep.addr]++
	}
	mean := float64(agents) / servers
	sd := math.Sqrt(agents * (1.0 / servers) * (1 - 1.0/servers))
	for _, ep := range eps {
		if got := float64(count[ep.addr]); math.Abs(got-mean) > 6*sd {
			t.Errorf("%s got %v of %d agents; want %v ± %.0f: %v", ep.addr, got, agents, mean, 6*sd, count)
		}
	}

	// The draw is the random source's: each start it can give is taken.
	for k := range servers {
		l := newServerList(eps, noLookup(t), func(n int) int { return k % n })
		if got := picks(l, time.Now(), 1)[0]; got != eps[k].addr {
			t.Errorf("a random source giving %d starts at %s; want %s", k, got, eps[k].addr)
		}
	}
}

// After an attempt, the next goes to the next entry, round the list, never
// to the same one again at once.
func TestNextEntryAfterEachAttempt(t *testing.T) {
	l := newServerList(entries(t, "192.0.2.1:7401,192.0.2.2:7401,192.0.2.3:7401"), noLookup(t), func(int) int { return 1 })
	got := picks(l, time.Now(), 5)
	want := []string{"192.0.2.2:7401", "192.0.2.3:7401", "192.0.2.1:7401", "192.0.2.2:7401", "192.0.2.3:7401"}
	if !slices.Equal(got, want) {
		t.Errorf("attempts went to %v; want %v", got, want)
	}
}

// A server that sent GoAway is skipped for avoidAfterGoAway, unless every
// server is avoided, or it is the only one.
func TestGoAwayAvoidsTheSender(t *testing.T) {
	now := time.Now()
	l := newServerList(entries(t, "192.0.2.1:7401,192.0.2.2:7401,192.0.2.3:7401"), noLookup(t), func(int) int { return 0 })
	if got := picks(l, now, 1)[0]; got != "192.0.2.1:7401" {
		t.Fatalf("first attempt to %s", got)
	}
	if !l.goAway("192.0.2.2:7401", now.Add(avoidAfterGoAway), 3) {
		t.Fatal("goAway with 3 servers: no other to go to; want one")
	}
	if got, want := picks(l, now, 3), []string{"192.0.2.3:7401", "192.0.2.1:7401", "192.0.2.3:7401"}; !slices.Equal(got, want) {
		t.Errorf("while 192.0.2.2 is avoided, attempts went to %v; want %v", got, want)
	}
	later := now.Add(avoidAfterGoAway)
	if got, want := picks(l, later, 3), []string{"192.0.2.1:7401", "192.0.2.2:7401", "192.0.2.3:7401"}; !slices.Equal(got, want) {
		t.Errorf("after %s, attempts went to %v; want %v", avoidAfterGoAway, got, want)
	}

	// Every server told the agent to go: it still tries them, in turn.
	for _, addr := range []string{"192.0.2.1:7401", "192.0.2.2:7401", "192.0.2.3:7401"} {
		l.goAway(addr, later.Add(avoidAfterGoAway), 3)
	}
	if got, want := picks(l, later, 3), []string{"192.0.2.1:7401", "192.0.2.2:7401", "192.0.2.3:7401"}; !slices.Equal(got, want) {
		t.Errorf("with all servers avoided, attempts went to %v; want %v", got, want)
	}

	one := newServerList(entries(t, "192.0.2.1:7401"), noLookup(t), nil)
	one.pick(context.Background(), now)
	if one.goAway("192.0.2.1:7401", now.Add(avoidAfterGoAway), 1) {
		t.Error("goAway with one server: another to go to; want none (it retries that one, as before)")
	}
}

// A DNS name with several records is one entry per address, each checked
// against the name; it is resolved at each attempt, so a changed record is
// followed; a name that does not resolve stays, to fail at its dial.
func TestDNSNameWithSeveralRecords(t *testing.T) {
	records := []string{"192.0.2.12", "192.0.2.11"}
	var lookups int
	lookup := func(_ context.Context, host string) ([]string, error) {
		lookups++
		switch host {
		case "fleet.test":
			return slices.Clone(records), nil
		case "gone.test":
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return nil, fmt.Errorf("unexpected lookup of %q", host)
	}
	l := newServerList(entries(t, "fleet.test:7401,192.0.2.1:7401"), lookup, func(int) int { return 0 })
	ep, n := l.pick(context.Background(), time.Now())
	if want := (endpoint{"192.0.2.11:7401", "fleet.test"}); ep != want || n != 3 {
		t.Errorf("first attempt: %v of %d; want %v of 3 (the name's two addresses, sorted, then the IP entry)", ep, n, want)
	}
	if got, want := picks(l, time.Now(), 2), []string{"192.0.2.12:7401", "192.0.2.1:7401"}; !slices.Equal(got, want) {
		t.Errorf("next attempts to %v; want %v", got, want)
	}
	if lookups != 3 {
		t.Errorf("%d lookups for 3 attempts; want one each", lookups)
	}
	records = []string{"192.0.2.13"}
	ep, n = l.pick(context.Background(), time.Now())
	if want := (endpoint{"192.0.2.13:7401", "fleet.test"}); ep != want || n != 2 {
		t.Errorf("after the record changed: %v of %d; want %v of 2", ep, n, want)
	}

	gone := newServerList(entries(t, "gone.test:7401"), lookup, nil)
	if ep, _ := gone.pick(context.Background(), time.Now()); ep != (endpoint{"gone.test:7401", "gone.test"}) {
		t.Errorf("a name that does not resolve: %v; want it as it is", ep)
	}
}

// A round is one attempt at each server: the backoff doubles after a whole
// round failed, not after each attempt; with one server, after each, as
// for one server before lists. A round nobody listened in caps it at
// refusedBackoff.
func TestRoundsBackOffPerRound(t *testing.T) {
	r := newRounds(30 * time.Second)
	var backoffs []time.Duration
	for range 6 {
		if w := r.failed(3, false); w > r.backoff {
			t.Fatalf("waited %s with a backoff of %s", w, r.backoff)
		}
		backoffs = append(backoffs, r.backoff)
	}
	want := []time.Duration{time.Second, time.Second, 2 * time.Second, 2 * time.Second, 2 * time.Second, 4 * time.Second}
	if !slices.Equal(backoffs, want) {
		t.Errorf("backoffs over 3 servers: %v; want %v", backoffs, want)
	}
	one := newRounds(5 * time.Second)
	backoffs = nil
	for range 4 {
		one.failed(1, false)
		backoffs = append(backoffs, one.backoff)
	}
	if want := []time.Duration{2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}; !slices.Equal(backoffs, want) {
		t.Errorf("backoffs with one server: %v; want %v", backoffs, want)
	}
	refused := newRounds(30 * time.Second)
	for range 10 {
		refused.failed(2, true)
	}
	if refused.backoff != refusedBackoff {
		t.Errorf("after rounds nobody listened in, backoff %s; want %s", refused.backoff, refusedBackoff)
	}
	mixed := newRounds(30 * time.Second)
	for range 5 {
		mixed.failed(2, true)
		mixed.failed(2, false)
	}
	if mixed.backoff != 30*time.Second {
		t.Errorf("after rounds where one server listened, backoff %s; want MaxBackoff", mixed.backoff)
	}
}

// Run goes round the list: after each failed attempt it dials the next
// server, after a wait of at most the backoff.
func TestRunTriesTheNextServer(t *testing.T) {
	pk := newTestPKI(t)
	a, _ := newTestAgent(t, "192.0.2.1:7401,192.0.2.2:7401,192.0.2.3:7401", pk)
	var out testenv.Buffer
	clock := clockwork.NewFakeClock()
	dials := make(chan string, 100)
	a.log, a.clock = slog.New(slog.NewTextHandler(&out, nil)), clock
	a.servers.intn = func(int) int { return 2 }
	a.cfg.Hooks.Dialer = func(_ context.Context, addr string) (net.Conn, error) {
		dials <- addr
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	defer runUntilReturn(t, a)()
	want := []string{"192.0.2.3:7401", "192.0.2.1:7401", "192.0.2.2:7401", "192.0.2.3:7401", "192.0.2.1:7401", "192.0.2.2:7401", "192.0.2.3:7401"}
	var got []string
	for len(got) < len(want) {
		testenv.Eventually(t, within, fmt.Sprintf("dial %d", len(got)+1), func() error {
			select {
			case addr := <-dials:
				got = append(got, addr)
				return nil
			default:
				clock.Advance(refusedBackoff) // the longest wait after refused dials
				return errors.New("no dial yet")
			}
		})
	}
	if !slices.Equal(got, want) {
		t.Errorf("dialed %v; want %v", got, want)
	}
	retry := regexp.MustCompile(`server=(\S+) .*retry_in=(\S+)`)
	for _, m := range retry.FindAllStringSubmatch(out.String(), -1) {
		if d, err := time.ParseDuration(m[2]); err != nil || d > refusedBackoff {
			t.Errorf("after %s refused, waited %s; want at most %s", m[1], m[2], refusedBackoff)
		}
	}
}
