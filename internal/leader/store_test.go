package leader

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/pgtest"
	"github.com/dockfleet/dockfleet/internal/store"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// TestElectionOnRealStores runs three electors on one real store of each
// engine, with the real clock: one leads; when it stops, another takes
// over; the writes of the one that stopped, fenced by its lease, are then
// refused.
func TestElectionOnRealStores(t *testing.T) {
	for _, engine := range []struct {
		name string
		open func(t *testing.T) store.Store
	}{
		{"sqlite", func(t *testing.T) store.Store {
			st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "dockfleet.db"))
			if err != nil {
				t.Fatal(err)
			}
			return st
		}},
		{"postgres", func(t *testing.T) store.Store {
			st, err := store.OpenPostgres(context.Background(), pgtest.DSN(t))
			if err != nil {
				t.Fatal(err)
			}
			return st
		}},
	} {
		t.Run(engine.name, func(t *testing.T) {
			st := engine.open(t)
			defer st.Close()
			type run struct {
				e    *Elector
				stop context.CancelFunc
				done chan struct{}
			}
			var runs []run
			for i := range 3 {
				e := New(st, Config{Name: "controller", Holder: fmt.Sprintf("r%d", i), TTL: 900 * time.Millisecond})
				ctx, stop := context.WithCancel(context.Background())
				r := run{e: e, stop: stop, done: make(chan struct{})}
				go func() {
					defer close(r.done)
					e.Run(ctx, func(ctx context.Context, _ int64) { <-ctx.Done() })
				}()
				runs = append(runs, r)
			}
			defer func() {
				for _, r := range runs {
					r.stop()
					<-r.done
				}
			}()
			leader := func() (int, error) {
				who := -1
				for i, r := range runs {
					if r.e.Epoch() != 0 {
						if who >= 0 {
							return -1, fmt.Errorf("r%d and r%d both lead", who, i)
						}
						who = i
					}
				}
				if who < 0 {
					return -1, errors.New("nobody leads")
				}
				return who, nil
			}
			var first int
			testenv.Eventually(t, 10*time.Second, "a leader", func() (err error) { first, err = leader(); return err })
			epoch := runs[first].e.Epoch()
			fenced := store.WithFence(context.Background(), store.Fence{Name: "controller", Holder: fmt.Sprintf("r%d", first), Epoch: epoch})
			if _, err := st.PutDeployment(fenced, api.Deployment{Project: "default", Name: "before"}); err != nil {
				t.Fatalf("the leader's fenced write: %v", err)
			}
			runs[first].stop()
			<-runs[first].done
			testenv.Eventually(t, 10*time.Second, "a new leader", func() error {
				who, err := leader()
				if err == nil && who == first {
					return errors.New("the stopped replica still leads")
				}
				return err
			})
			if _, err := st.PutDeployment(fenced, api.Deployment{Project: "default", Name: "after"}); !errors.Is(err, store.ErrFenced) {
				t.Fatalf("a write under the stopped leader's lease: got %v; want ErrFenced", err)
			}
		})
	}
}
