package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
)

// rawBench does the work with the Docker API alone: no scheduler, no
// agent, no store, no health-check interval. It is the floor a control
// plane on this engine can approach.
//
// create: cfg.parallel goroutines create, start and inspect the N
// containers (the engine serialises much of this work; more calls in
// flight than that buy nothing on two cores), and each container is
// probed from the moment it is started until GET /healthz passes, every
// cfg.poll. With cfg.rawGated the create goes in health-gated batches
// instead, as the update does and as dockfleet's first rollout does: the
// floor for that design rather than for the engine.
//
// update: in batches of cfg.batch, stop-first: each instance of the batch
// is force-removed (as dockfleet's agent removes), its replacement created,
// started and probed, all of the batch at once; the next batch starts when
// the whole batch is healthy, as dockfleet's does with minHealthyTime 0s.
type rawBench struct {
	d   *docker
	cfg config

	mu  sync.Mutex
	ids []string // every container made, for the teardown
	cur []string // the container of each replica
}

func (r *rawBench) setup(context.Context) error { return nil }

// name names replica i's container of image; Docker names must be unique.
func (r *rawBench) name(i int, image string) string {
	id := strings.TrimPrefix(r.d.imageIDs[image], "sha256:")
	return fmt.Sprintf("dockfleet-bench-%s-raw-%d-%.12s", r.cfg.runID, i, id)
}

func (r *rawBench) track(id string) {
	r.mu.Lock()
	r.ids = append(r.ids, id)
	r.mu.Unlock()
}

func (r *rawBench) create(ctx context.Context) error {
	r.cur = make([]string, r.cfg.n)
	if r.cfg.rawGated {
		return r.inBatches(ctx, r.cfg.imageV1)
	}
	g, gctx := errgroup.WithContext(ctx)
	sem := make(chan struct{}, r.cfg.parallel)
	for i := range r.cfg.n {
		g.Go(func() error {
			select {
			case sem <- struct{}{}:
			case <-gctx.Done():
				return gctx.Err()
			}
			id, ip, err := r.d.run(gctx, r.name(i, r.cfg.imageV1), r.cfg.imageV1)
			<-sem
			if id != "" {
				r.track(id)
				r.cur[i] = id
			}
			if err != nil {
				return err
			}
			return waitHealthy(gctx, ip, r.cfg.poll)
		})
	}
	return g.Wait()
}

func (r *rawBench) update(ctx context.Context) error { return r.inBatches(ctx, r.cfg.imageV2) }

// inBatches replaces (or, the first time, creates) the replicas' containers
// with containers of image, a batch at a time, each batch healthy before
// the next starts.
func (r *rawBench) inBatches(ctx context.Context, image string) error {
	for start := 0; start < r.cfg.n; start += r.cfg.batch {
		g, gctx := errgroup.WithContext(ctx)
		for i := start; i < min(start+r.cfg.batch, r.cfg.n); i++ {
			g.Go(func() error {
				if r.cur[i] != "" {
					if err := r.d.remove(gctx, r.cur[i]); err != nil {
						return err
					}
				}
				id, ip, err := r.d.run(gctx, r.name(i, image), image)
				if id != "" {
					r.track(id)
					r.cur[i] = id
				}
				if err != nil {
					return err
				}
				return waitHealthy(gctx, ip, r.cfg.poll)
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return nil
}

func (r *rawBench) teardown(ctx context.Context) error {
	var errs []error
	for _, id := range r.ids {
		if err := r.d.remove(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
