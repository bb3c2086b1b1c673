// Package faults is the fault-injection suite: the real dockfleet binary as a
// server and agents on the real Docker daemon, with faults injected from
// outside (kill -9, a daemon that goes away, ...), each test checking what
// dockfleet promises against a threshold. Every random fault's seed and
// timing is logged, so that DOCKFLEET_FAULT_SEED=N replays a failure's
// schedule (see CONTRIBUTING.md).
package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// faultRand returns the random source of a test's faults, seeded from
// DOCKFLEET_FAULT_SEED when set, else from the clock, and logs the seed.
func faultRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DOCKFLEET_FAULT_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("DOCKFLEET_FAULT_SEED=%q: not an unsigned integer", s)
		}
	}
	t.Logf("fault seed %d: replay with DOCKFLEET_FAULT_SEED=%d go test ./tests/faults -run '^%s$'", seed, seed, t.Name())
	return rand.New(rand.NewPCG(seed, seed))
}

// between returns a random duration in [lo, hi).
func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

// webNodes starts a fleet with n agents w1…wn labelled role=web.
func webNodes(t *testing.T, n int) (*harness.Fleet, []string) {
	t.Helper()
	testenv.HelloImages(t)
	f := harness.NewFleet(t)
	var specs [][2]string
	var names []string
	for i := 1; i <= n; i++ {
		names = append(names, fmt.Sprintf("w%d", i))
		specs = append(specs, [2]string{names[i-1], "role=web"})
	}
	f.AddAgents(specs...)
	return f, names
}

// watcher samples the fleet's containers as Docker sees them, every 200 ms,
// and records every moment two running containers belong to one instance.
type watcher struct {
	mu         sync.Mutex
	samples    int
	duplicates []string
	stop       func()
	done       chan struct{}
}

// watch starts a watcher over the containers of the fleet's nodes (those in
// f.NodeIDs when it starts), stopped when the test ends.
func watch(t *testing.T, f *harness.Fleet) *watcher {
	t.Helper()
	sdk := testenv.SDK(t)
	nodes := map[string]string{} // ID → name
	for name, id := range f.NodeIDs {
		nodes[id] = name
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			res, err := sdk.ContainerList(ctx, client.ContainerListOptions{
				Filters: make(client.Filters).Add("label", container.LabelManaged+"=true").Add("status", "running")})
			if err == nil {
				byInstance := map[string][]string{}
				for _, c := range res.Items {
					if node, ok := nodes[c.Labels[container.LabelNode]]; ok {
						key := node + "/" + c.Labels[container.LabelInstance]
						byInstance[key] = append(byInstance[key], c.ID[:12]+" "+c.Image)
					}
				}
				w.mu.Lock()
				w.samples++
				for inst, cs := range byInstance {
					if len(cs) > 1 {
						w.duplicates = append(w.duplicates, fmt.Sprintf("%s %s: %s", time.Now().Format("15:04:05.000"), inst, strings.Join(cs, ", ")))
					}
				}
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(w.end)
	return w
}

// end stops the watcher and waits for it.
func (w *watcher) end() {
	w.stop()
	<-w.done
}

// check stops the watcher and fails the test if it ever saw two running
// containers of one instance, or saw nothing at all.
func (w *watcher) check(t *testing.T) {
	t.Helper()
	w.end()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.samples == 0 {
		t.Fatal("the container watcher took no sample")
	}
	t.Logf("container watcher: %d samples of docker ps", w.samples)
	if len(w.duplicates) > 0 {
		t.Errorf("%d samples saw two running containers of one instance; want none:\n%s", len(w.duplicates), strings.Join(w.duplicates, "\n"))
	}
}

// describe shows containers as "ID image state" for failure messages.
func describe(cs []mcontainer.Summary) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID[:12]+" "+c.Image+" "+string(c.State))
	}
	return "[" + strings.Join(out, "; ") + "]"
}
