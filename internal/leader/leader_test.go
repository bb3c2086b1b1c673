package leader

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/dockfleet/dockfleet/internal/pgtest"
	"github.com/dockfleet/dockfleet/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(pgtest.Wrap(m)) }

// leases is the store's lease table in memory, on the test's fake clock:
// the rules of the real stores (storetest checks those), for testing the
// elector's timing alone. A lease is expired strictly after its expiry, as
// in the stores.
type leases struct {
	clock *clockwork.FakeClock
	mu    sync.Mutex
	l     map[string]*lease
	down  map[string]bool // holders that cannot reach the store
}

type lease struct {
	store.Lease
	expires time.Time
}

var errDown = errors.New("store unreachable")

func (s *leases) AcquireLease(_ context.Context, name, holder string, ttl time.Duration) (store.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down[holder] {
		return store.Lease{}, errDown
	}
	now := s.clock.Now()
	l := s.l[name]
	switch {
	case l == nil:
		l = &lease{Lease: store.Lease{Holder: holder, Epoch: 1}}
		s.l[name] = l
	case l.Holder == holder && !now.After(l.expires):
	case now.After(l.expires):
		l.Holder, l.Epoch = holder, l.Epoch+1
	default:
		return l.Lease, nil
	}
	l.expires = now.Add(ttl)
	return l.Lease, nil
}

func (s *leases) ReleaseLease(_ context.Context, name, holder string, epoch int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down[holder] {
		return errDown
	}
	if l := s.l[name]; l != nil && l.Holder == holder && l.Epoch == epoch {
		l.expires = time.Time{}
	}
	return nil
}

func (s *leases) setDown(holder string, down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down[holder] = down
}

// replica runs one elector and records when it leads.
type replica struct {
	name   string
	e      *Elector
	stop   context.CancelFunc
	ended  chan struct{}
	leadMu sync.Mutex
	terms  []int64 // epochs led, in order
	lctx   context.Context
}

func (r *replica) leading() (context.Context, []int64) {
	r.leadMu.Lock()
	defer r.leadMu.Unlock()
	return r.lctx, append([]int64(nil), r.terms...)
}

type cluster struct {
	t     *testing.T
	clock *clockwork.FakeClock
	store *leases
	reps  []*replica
	// overlap is set when a replica started leading while another's
	// lead had not ended.
	mu      sync.Mutex
	overlap bool
}

func newCluster(t *testing.T, names ...string) *cluster {
	clock := clockwork.NewFakeClock()
	c := &cluster{t: t, clock: clock, store: &leases{clock: clock, l: map[string]*lease{}, down: map[string]bool{}}}
	for _, n := range names {
		r := &replica{name: n, ended: make(chan struct{})}
		r.e = New(c.store, Config{Name: "controller", Holder: n, TTL: 3 * time.Second, Clock: clock})
		ctx, stop := context.WithCancel(context.Background())
		r.stop = stop
		go func() {
			defer close(r.ended)
			r.e.Run(ctx, func(lctx context.Context, epoch int64) {
				c.mu.Lock()
				for _, o := range c.reps {
					if ctx, _ := o.leading(); o != r && ctx != nil && ctx.Err() == nil {
						c.overlap = true
					}
				}
				c.mu.Unlock()
				r.leadMu.Lock()
				r.lctx = lctx
				r.terms = append(r.terms, epoch)
				r.leadMu.Unlock()
				<-lctx.Done()
			})
		}()
		c.mu.Lock()
		c.reps = append(c.reps, r)
		c.mu.Unlock()
		// One at a time, so that the first named is the first leader.
		c.settle()
	}
	t.Cleanup(func() {
		for _, r := range c.reps {
			r.stop()
			<-r.ended
		}
		if c.overlap {
			t.Error("two replicas led at once")
		}
	})
	return c
}

// settle waits until every running elector waits on the clock again: one
// timer each at rest.
func (c *cluster) settle() {
	c.t.Helper()
	running := 0
	for _, r := range c.reps {
		select {
		case <-r.ended:
		default:
			running++
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.clock.BlockUntilContext(ctx, running); err != nil {
		c.t.Fatalf("electors did not settle: %v", err)
	}
	// An elector holds its epoch from before it starts lead until its
	// lease ends, before it ends lead: wait until each one's lead has
	// caught up.
	for _, r := range c.reps {
		for {
			lctx, _ := r.leading()
			if (r.e.Epoch() != 0) == (lctx != nil && lctx.Err() == nil) {
				break
			}
			select {
			case <-ctx.Done():
				c.t.Fatalf("replica %s: its lead did not start or end with its lease", r.name)
			case <-time.After(time.Millisecond):
			}
		}
	}
}

// advance moves the clock by d in steps of 100 ms, letting the electors
// act at each step.
func (c *cluster) advance(d time.Duration) {
	c.t.Helper()
	for step := 100 * time.Millisecond; d > 0; d -= step {
		c.clock.Advance(min(step, d))
		c.settle()
	}
}

// leader says which replica leads now, "" if none, and fails the test if
// more than one does.
func (c *cluster) leader() string {
	c.t.Helper()
	var who []string
	for _, r := range c.reps {
		if r.e.Epoch() != 0 {
			who = append(who, r.name)
		}
	}
	switch len(who) {
	case 0:
		return ""
	case 1:
		return who[0]
	}
	c.t.Fatalf("replicas %v all lead", who)
	return ""
}

func TestOneLeaderAndNoOverlap(t *testing.T) {
	c := newCluster(t, "a", "b", "c")
	if got := c.leader(); got != "a" {
		t.Fatalf("leader %q; want a, the first to ask", got)
	}
	// Renewals keep it: a long quiet time changes nothing.
	c.advance(30 * time.Second)
	if got := c.leader(); got != "a" {
		t.Fatalf("after 30 s the leader is %q; want a still", got)
	}
	if _, terms := c.reps[0].leading(); len(terms) != 1 || terms[0] != 1 {
		t.Fatalf("a led terms %v; want one, of epoch 1", terms)
	}
}

func TestLeaderCutOffStepsDownBeforeItsLeaseExpires(t *testing.T) {
	c := newCluster(t, "a", "b")
	a := c.reps[0]
	lctx, _ := a.leading()
	c.store.setDown("a", true)
	start := c.clock.Now()
	// a stops leading at the latest when its lease would expire (3 s), and
	// b, which finds it expired only strictly after that, then leads.
	for c.leader() != "b" {
		if c.clock.Since(start) > 5*time.Second {
			t.Fatalf("after %s of a cut off, leader %q; want b", c.clock.Since(start), c.leader())
		}
		c.advance(100 * time.Millisecond)
	}
	if lctx.Err() == nil {
		t.Fatal("a's lead context still runs while b leads")
	}
	if took := c.clock.Since(start); took < 3*time.Second || took > 3*time.Second+time.Second+100*time.Millisecond {
		t.Fatalf("b took over %s after a was cut off; want between the TTL (3 s) and the TTL plus one renewal interval", took)
	}
	if _, terms := c.reps[1].leading(); len(terms) != 1 || terms[0] != 2 {
		t.Fatalf("b led terms %v; want one, of epoch 2", terms)
	}
	// a comes back as a follower: b keeps the lease.
	c.store.setDown("a", false)
	c.advance(10 * time.Second)
	if got := c.leader(); got != "b" {
		t.Fatalf("leader %q after a came back; want b", got)
	}
}

func TestStoppedLeaderHandsOverAtOnce(t *testing.T) {
	c := newCluster(t, "a", "b")
	a := c.reps[0]
	a.stop()
	<-a.ended
	// b asks every TTL/3 (1 s); the released lease is free at once.
	c.advance(time.Second)
	if got := c.leader(); got != "b" {
		t.Fatalf("leader %q 1 s after a stopped; want b", got)
	}
}

func TestKilledLeaderIsReplacedWithinTTLAndARenewal(t *testing.T) {
	c := newCluster(t, "a", "b")
	// A killed replica neither renews nor releases: as the store sees it,
	// the same as one cut off for good. Its own loop is stopped without
	// its release reaching the store.
	a := c.reps[0]
	c.store.setDown("a", true)
	a.stop()
	<-a.ended
	start := c.clock.Now()
	for c.leader() != "b" {
		if c.clock.Since(start) > 3*time.Second+time.Second+100*time.Millisecond {
			t.Fatalf("no new leader %s after the leader died", c.clock.Since(start))
		}
		c.advance(100 * time.Millisecond)
	}
}

// A leader whose store fails for a while, shorter than its lease, keeps
// leading: once a renewal fails it tries again every quarter interval
// until the step-down, not only once more. (A store slow under load is
// the same: an attempt may take until the step-down.)
func TestLeaderRidesOutAShortStoreOutage(t *testing.T) {
	c := newCluster(t, "a", "b")
	c.advance(500 * time.Millisecond)
	c.store.setDown("a", true)
	c.advance(2 * time.Second) // past two renewal intervals (1 s) of the 3 s TTL
	c.store.setDown("a", false)
	c.advance(10 * time.Second)
	if got := c.leader(); got != "a" {
		t.Fatalf("leader %q after a 2 s outage of a's store; want a still", got)
	}
	if _, terms := c.reps[0].leading(); len(terms) != 1 {
		t.Fatalf("a led terms %v; want one, never interrupted", terms)
	}
}

// A replica whose lease ended says at once that it does not lead, while
// its work still winds down: what the replica is asked meanwhile goes to
// the next leader, not to a controller that is ending. (In a 40,000-agent
// run a former leader took 7 s to wind down.)
func TestLeadingEndsWithTheLeaseNotWithTheWork(t *testing.T) {
	clock := clockwork.NewFakeClock()
	st := &leases{clock: clock, l: map[string]*lease{}, down: map[string]bool{}}
	e := New(st, Config{Name: "controller", Holder: "a", TTL: 3 * time.Second, Clock: clock})
	ctx, stop := context.WithCancel(context.Background())
	lost, release, ended := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		e.Run(ctx, func(lctx context.Context, _ int64) {
			<-lctx.Done()
			close(lost)
			<-release // the work winds down slowly
		})
	}()
	tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := clock.BlockUntilContext(tctx, 1); err != nil { // a renews
		t.Fatal(err)
	}
	if e.Epoch() == 0 {
		t.Fatal("a does not lead")
	}
	st.setDown("a", true)
	for i := 0; ; i++ {
		if i == 50 {
			t.Fatal("a's lead still runs 5 s after its store went away; its TTL is 3 s")
		}
		clock.Advance(100 * time.Millisecond)
		// Either the elector waits on the clock again, or its lease ended.
		waits := make(chan error, 1)
		go func() { waits <- clock.BlockUntilContext(tctx, 1) }()
		select {
		case <-lost:
		case err := <-waits:
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		break
	}
	if got := e.Epoch(); got != 0 {
		t.Errorf("a says it leads (epoch %d) while its work winds down, after its lease ended", got)
	}
	close(release)
	stop()
	<-ended
}
