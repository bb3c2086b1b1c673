// Package leader chooses the one server replica that runs the controllers
// (placement, rollouts, node liveness decisions) when several replicas
// share one store.
//
// The choice is a lease in the store, not a consensus protocol of our own:
// the database the replicas already share decides. A replica holds the
// lease for TTL from its last renewal, as the store's clock counts (no two
// replicas' clocks are compared), and renews it every TTL/3. Each time the
// lease changes hands its epoch grows; the leader's writes carry the epoch
// (store.WithFence), and the store refuses them once another replica holds
// the lease, so a leader that was paused or cut off past its lease cannot
// undo its successor's work.
//
// A leader that cannot renew stops leading on its own clock before the
// lease can expire in the store: it measures from the moment it sent its
// last successful renewal, which is no later than when the store stamped
// it, so it always steps down first.
package leader

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/store"
)

// Store is what the elector needs of the store.
type Store interface {
	// AcquireLease takes lease name for holder for ttl if it is free or
	// expired, renews it if holder holds it, and returns it as it then is:
	// held by holder or by another replica.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (store.Lease, error)
	// ReleaseLease ends holder's lease name of epoch, if it still holds
	// it, so that another replica may take it at once.
	ReleaseLease(ctx context.Context, name, holder string, epoch int64) error
}

// Config configures an Elector.
type Config struct {
	// Name names the lease: "controller".
	Name string
	// Holder is this replica's ID, unique among the replicas.
	Holder string
	// TTL is how long a lease lasts without renewal: a new leader is
	// chosen within TTL plus one renewal interval of the leader's death.
	// Default DefaultTTL.
	TTL    time.Duration
	Clock  clockwork.Clock
	Logger *slog.Logger
}

// DefaultTTL lets a new leader take over within about 7 s of a leader's
// death (the bound is 10 s), while a leader survives a store that
// stalls for a few seconds.
const DefaultTTL = 5 * time.Second

// Elector takes and renews the lease, and runs the leader's work while it
// holds it.
type Elector struct {
	cfg   Config
	store Store
	clock clockwork.Clock
	log   *slog.Logger

	mu    sync.Mutex
	epoch int64 // of the lease held now; 0 when not leading
}

// New returns an elector for cfg over st.
func New(st Store, cfg Config) *Elector {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Elector{cfg: cfg, store: st, clock: cfg.Clock, log: cfg.Logger.With("lease", cfg.Name, "replica", cfg.Holder)}
}

// Epoch is the epoch of the lease this replica holds, 0 if it does not
// lead.
func (e *Elector) Epoch() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.epoch
}

// Run tries for the lease until ctx ends. Each time it gets it, it calls
// lead with a context that ends when the lease is lost (or ctx ends), and
// waits for lead to return before it tries again: two leads of one
// replica never overlap. When ctx ends it releases a lease it holds, so a
// replica stopped on purpose hands over at once.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context, epoch int64)) {
	every := e.cfg.TTL / 3
	for {
		l, sent, err := e.acquire(ctx)
		if err == nil && l.Holder == e.cfg.Holder {
			e.leadWhileHeld(ctx, l.Epoch, sent, lead)
		} else if err != nil && ctx.Err() == nil {
			e.log.Warn("cannot reach the store to take the leader lease", "err", err)
		}
		if !e.sleep(ctx, nil, every) {
			return
		}
	}
}

// sleep waits for d, and says false if ctx ended or done closed first.
// One timer, stopped on the way out, so a test's fake clock counts one
// waiter per elector at rest.
func (e *Elector) sleep(ctx context.Context, done <-chan struct{}, d time.Duration) bool {
	t := e.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-done:
		return false
	case <-t.Chan():
		return true
	}
}

func (e *Elector) acquire(ctx context.Context) (store.Lease, time.Time, error) {
	return e.acquireWithin(ctx, e.cfg.TTL/3)
}

// acquireWithin asks the store for the lease, waiting d at most, and
// returns it with when the request was sent.
func (e *Elector) acquireWithin(ctx context.Context, d time.Duration) (store.Lease, time.Time, error) {
	sent := e.clock.Now()
	actx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	l, err := e.store.AcquireLease(actx, e.cfg.Name, e.cfg.Holder, e.cfg.TTL)
	return l, sent, err
}

// leadWhileHeld runs lead and renews the lease until it is lost, cannot be
// renewed in time, or ctx ends; then it ends lead and waits for it.
func (e *Elector) leadWhileHeld(ctx context.Context, epoch int64, renewed time.Time, lead func(context.Context, int64)) {
	e.mu.Lock()
	e.epoch = epoch
	e.mu.Unlock()
	e.log.Info("leading", "epoch", epoch)
	lctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(lctx, epoch)
	}()
	reason := e.renew(lctx, epoch, renewed, done)
	// The lease is over: say so before lead winds down, which can take
	// seconds on a loaded machine, so that what the replica is asked
	// meanwhile goes to the next leader, not to work that is ending.
	e.mu.Lock()
	e.epoch = 0
	e.mu.Unlock()
	stop()
	<-done
	if ctx.Err() != nil {
		// Handing over at once: a fresh context, since ctx is over.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.TTL/3)
		defer cancel()
		if err := e.store.ReleaseLease(rctx, e.cfg.Name, e.cfg.Holder, epoch); err != nil {
			e.log.Warn("cannot release the leader lease; another replica takes it when it expires", "err", err, "epoch", epoch)
		}
		e.log.Info("stopped leading", "epoch", epoch, "reason", "stopping")
		return
	}
	e.log.Warn("stopped leading", "epoch", epoch, "reason", reason)
}

// renew keeps the lease of epoch until it is lost or ctx ends, or lead
// returns on its own (done), and says why it stopped. renewed is when the
// last successful renewal was sent.
func (e *Elector) renew(ctx context.Context, epoch int64, renewed time.Time, done <-chan struct{}) string {
	every := e.cfg.TTL / 3
	wait := every
	for {
		// Step down before the store could see the lease expire: its TTL
		// counts from when the renewal arrived, which is after it was sent.
		stepDown := renewed.Add(e.cfg.TTL)
		if !e.sleep(ctx, done, min(wait, stepDown.Sub(e.clock.Now()))) {
			if ctx.Err() != nil {
				return "stopping"
			}
			return "the leader's work ended"
		}
		left := stepDown.Sub(e.clock.Now())
		if left <= 0 {
			return "the lease could not be renewed in time"
		}
		// An attempt may take until the step-down: a store slow to answer
		// (a loaded machine) still renews a lease that has not expired.
		// One that failed is tried again soon.
		l, sent, err := e.acquireWithin(ctx, left)
		switch {
		case ctx.Err() != nil:
			return "stopping"
		case err != nil:
			e.log.Warn("cannot renew the leader lease", "err", err, "epoch", epoch)
			wait = every / 4
		case l.Holder != e.cfg.Holder || l.Epoch != epoch:
			return "another replica took the lease"
		default:
			renewed, wait = sent, every
		}
	}
}
