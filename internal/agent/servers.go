package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// endpoint is one server an agent may connect to.
type endpoint struct {
	// addr is the "host:port" to dial: an IP address once a name was
	// resolved, or the entry's own host if it could not be.
	addr string
	// host is the name the server's certificate must carry: the host of
	// the --server entry the endpoint came from, as the agent was told it.
	host string
}

// serverList is the agent's --server entries and where it is among them.
// Each agent starts at a random entry, so that a fleet spreads evenly over
// the servers; every attempt after a failure goes to the next one, not the
// same again at once; a server that sent GoAway is avoided for a while. A
// name is resolved again at each attempt, so a changed DNS record is
// followed, and one that resolves to several addresses counts as one entry
// per address. It is used by Run's goroutine only.
type serverList struct {
	entries []endpoint // as configured; hosts may be names
	lookup  func(ctx context.Context, host string) ([]string, error)
	intn    func(n int) int // the random source of the start entry and of waits
	started bool            // whether the start entry was drawn
	last    string          // the address of the last attempt
	next    int             // its index in its list, plus one
	again   bool            // whether the next attempt goes to last again
	avoid   map[string]time.Time
}

// lookupTimeout bounds one resolution of a --server name: a resolver that
// hangs must not keep the agent from the servers it could reach.
const lookupTimeout = 5 * time.Second

// avoidAfterGoAway is how long an agent keeps away from a server that told
// it to go, if it has others: long enough for a server shutting down to be
// gone, or an overloaded one to shed its load elsewhere.
const avoidAfterGoAway = time.Minute

func newServerList(entries []endpoint, lookup func(context.Context, string) ([]string, error), intn func(int) int) *serverList {
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	if intn == nil {
		intn = rand.IntN
	}
	return &serverList{entries: entries, lookup: lookup, intn: intn, avoid: map[string]time.Time{}}
}

// resolve is the list of endpoints of an attempt: each entry whose host is
// an IP address as it is, each name as one endpoint per address it
// resolves to now, in a stable order so that "the next entry" means the
// same from one attempt to the next. A name that does not resolve stays as
// it is: dialing it then fails with the resolver's error, which the agent
// logs, and the other entries are tried.
func (l *serverList) resolve(ctx context.Context) []endpoint {
	var out []endpoint
	seen := map[string]bool{}
	add := func(e endpoint) {
		if !seen[e.addr] {
			seen[e.addr] = true
			out = append(out, e)
		}
	}
	for _, e := range l.entries {
		host, port, _ := net.SplitHostPort(e.addr) // parseServer made it
		if net.ParseIP(host) != nil {
			add(e)
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		addrs, err := l.lookup(lctx, host)
		cancel()
		if err != nil || len(addrs) == 0 {
			add(e)
			continue
		}
		slices.Sort(addrs)
		for _, a := range addrs {
			add(endpoint{addr: net.JoinHostPort(a, port), host: e.host})
		}
	}
	return out
}

// pick resolves the list and returns the endpoint of the next attempt at
// time now, with how many endpoints the list has now: the first attempt
// goes to a random one, each later one to the one after the last, skipping
// those avoided until after now unless all are.
func (l *serverList) pick(ctx context.Context, now time.Time) (endpoint, int) {
	eps := l.resolve(ctx)
	n := len(eps)
	if !l.started {
		l.next, l.started = l.intn(n), true
	}
	for addr, until := range l.avoid {
		if !now.Before(until) {
			delete(l.avoid, addr)
		}
	}
	// The one after the last attempt's, if the list still has it (DNS may
	// have changed it); else the one at the place after it.
	start := l.next % n
	if i := slices.IndexFunc(eps, func(e endpoint) bool { return e.addr == l.last }); i >= 0 {
		start = (i + 1) % n
		if l.again {
			start = i
		}
	}
	l.again = false
	pick := start
	for i := range n {
		j := (start + i) % n
		if _, avoided := l.avoid[eps[j].addr]; !avoided {
			pick = j
			break
		}
	}
	l.last, l.next = eps[pick].addr, pick+1
	return eps[pick], n
}

// stay makes the next attempt go where the last one went: the server that
// enrolled the agent, which was up a moment ago.
func (l *serverList) stay() { l.again = true }

// goAway keeps the list away from addr, the server that sent GoAway, until
// until, and reports whether it has another endpoint to go to meanwhile
// (n is how many the list had at the attempt).
func (l *serverList) goAway(addr string, until time.Time, n int) bool {
	if n < 2 {
		return false
	}
	l.avoid[addr] = until
	return true
}

// describe lists the configured entries, for the log.
func (l *serverList) describe() string {
	addrs := make([]string, len(l.entries))
	for i, e := range l.entries {
		addrs[i] = e.addr
	}
	return strings.Join(addrs, ",")
}

// upTo is a random duration in [0, d] from the list's random source.
func (l *serverList) upTo(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	const unit = time.Millisecond
	return time.Duration(l.intn(int(d/unit)+1)) * unit
}

// parseServers parses every entry of Config.Server (comma-separated) and
// Config.Servers, dropping repeats, and names the first bad one.
func parseServers(server string, servers []string) ([]endpoint, error) {
	var raw []string
	if server != "" {
		raw = strings.Split(server, ",")
	}
	for _, s := range servers {
		raw = append(raw, strings.Split(s, ",")...)
	}
	var out []endpoint
	for _, s := range raw {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		addr, host, err := parseServer(s)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(out, func(e endpoint) bool { return e.addr == addr }) {
			out = append(out, endpoint{addr: addr, host: host})
		}
	}
	return out, nil
}

// parseServer accepts "host:port", "https://host:port" or "grpcs://host:port".
func parseServer(s string) (addr, host string, err error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return "", "", fmt.Errorf("--server %q is not a host:port or https://host:port address", s)
		}
		s = u.Host
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		return "", "", fmt.Errorf("--server %q must name a host and port, e.g. 10.0.0.5:7401", s)
	}
	if host == "" {
		host = "localhost"
	}
	return net.JoinHostPort(host, port), host, nil
}

// rounds is the backoff of attempts over a list of servers: each failed
// attempt waits a jittered backoff before the next entry, and the backoff
// doubles, up to a cap, once a whole round of the list failed. With one
// entry every attempt is a round: exponential backoff as for one server.
type rounds struct {
	backoff, max time.Duration
	tried        int  // failed attempts in this round
	allRefused   bool // whether nobody listened at any of them
}

func newRounds(maxBackoff time.Duration) *rounds {
	r := &rounds{max: maxBackoff}
	r.reset()
	return r
}

// reset starts again from the shortest backoff: a server welcomed the agent.
func (r *rounds) reset() {
	r.backoff, r.tried, r.allRefused = time.Second, 0, true
}

// failed records a failed attempt, made while the list had n endpoints,
// that nobody listened to if refused, and returns how long to wait before
// the next. A round of attempts nobody listened to caps the backoff at
// refusedBackoff: the servers are restarting.
func (r *rounds) failed(n int, refused bool) time.Duration {
	wait := jittered(r.backoff)
	r.tried++
	r.allRefused = r.allRefused && refused
	if r.tried >= n {
		r.backoff = min(r.backoff*2, r.max)
		if r.allRefused {
			r.backoff = min(r.backoff, refusedBackoff)
		}
		r.tried, r.allRefused = 0, true
	}
	return wait
}
