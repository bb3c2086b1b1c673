package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/controller"
	"github.com/dockfleet/dockfleet/internal/restapi"
)

// bigEnvSpec is a global deployment on the good agents whose env holds n
// values of size bytes of c.
func bigEnvSpec(name string, n, size int, c string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: %s}\nspec:\n  mode: global\n"+
		"  selector: {matchLabels: {role: good}}\n  update: {batchSize: 100%%, minHealthyTime: 0s}\n"+
		"  container:\n    image: hello:v1\n    env:\n", name)
	for i := range n {
		fmt.Fprintf(&b, "      V%d: %q\n", i, strings.Repeat(c, size))
	}
	return b.String()
}

// A deployment whose desired state would not fit in one message to an
// agent is refused at apply, with a 400 that names the deployment, the
// node, the sizes and the limit, and changes nothing; the deployments
// that fit reach every agent, which stay connected (review finding 9: the
// agents looped on "received message larger than max").
func TestApplyRefusesWhatAgentsCannotReceive(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	f.startGoodAgents(t)
	ctx := context.Background()

	// Three deployments of about 0.9 MiB each fit on a node; a fourth
	// does not.
	for i := range 3 {
		doc := bigEnvSpec(fmt.Sprintf("big-%d", i), 15, 60<<10, "x")
		if _, err := f.api.Apply(ctx, "big.yaml", "", []byte(doc)); err != nil {
			t.Fatalf("applying big-%d, which fits: %v", i, err)
		}
	}
	for _, tt := range []struct {
		name, doc string
		want      []string
	}{
		{"big-3", bigEnvSpec("big-3", 15, 60<<10, "x"),
			[]string{"big.yaml: deployment big-3: the desired state of node good-", "bytes of other deployments", fmt.Sprint(controller.MaxDesiredState), "20 of the 20 nodes it targets"}},
		// JSON writes '<' as \u003c: 0.9 MiB of YAML is 5 MiB for an agent.
		{"escaped", bigEnvSpec("escaped", 15, 60<<10, "<"),
			[]string{"big.yaml: deployment escaped: spec.container is", fmt.Sprintf("at most %d are allowed", restapi.MaxContainerSpec)}},
	} {
		_, err := f.api.Apply(ctx, "big.yaml", "", []byte(tt.doc))
		var he *client.APIError
		if !errors.As(err, &he) || he.StatusCode != http.StatusBadRequest {
			t.Errorf("applying %s: %v; want a 400", tt.name, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("applying %s: %v; want it to say %q", tt.name, err, w)
			}
		}
		if _, err := f.api.GetDeployment(ctx, "default", tt.name); !errors.As(err, &he) || he.StatusCode != http.StatusNotFound {
			t.Errorf("deployment %s after its refused apply: %v; want not found", tt.name, err)
		}
	}
	if f.countLines("apply refused") != 2 {
		t.Errorf("the server did not log both refusals; log:\n%s", f.logs.String())
	}
	// The deployments that fit roll out: every agent got its desired
	// state of about 2.7 MiB, on the stream it had from the start.
	for i := range 3 {
		name := fmt.Sprintf("big-%d", i)
		// Polled every 50ms, not at testenv.Eventually's 20ms: at that
		// rate, on a loaded 2-core machine, the agents here (taking 2.7
		// MiB desired states under -race) missed heartbeats and
		// reconnected in most runs.
		for deadline := time.Now().Add(60 * time.Second); ; {
			r, err := f.api.GetRollout(ctx, "default", name)
			if err != nil {
				t.Fatal(err)
			}
			if r.State.Final() {
				if r.State != api.RolloutSucceeded {
					t.Errorf("the rollout of %s ended %s; want succeeded", name, r.State)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the rollout of %s is still %s after 60s; want succeeded", name, r.State)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, line := range []string{"agent disconnected", "not sending a node its desired state"} {
		if n := f.countLines(line); n > 0 {
			t.Errorf("the server logged %q %d times; want never", line, n)
		}
	}
}

// A hostile spec costs the server bounded memory however many are
// applied at once: a 4 MiB one is refused by its size, and one just under
// the 1 MiB limit, a flat list of about half a million args, is refused by
// the list bound after a parse whose cost maxApplies bounds (review
// finding 14: one 4 MiB apply took 900 MB).
func TestHostileSpecsCostBoundedMemory(t *testing.T) {
	s, tok := newTestServer(t)
	h := s.api
	hostile := func(size int) string {
		head := "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  container:\n    image: hello:v1\n    args: [a"
		return head + strings.Repeat(",a", (size-len(head)-2)/2) + "]\n"
	}
	for _, tt := range []struct {
		name, body string
		want       string
		parallel   int
	}{
		{"4 MiB", hostile(4 << 20), fmt.Sprintf("spec is larger than %d bytes", restapi.MaxSpecFile), 4},
		{"just under 1 MiB", hostile(restapi.MaxSpecFile - 10), "spec.container.args: has 524", 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			peak := watchHeap()
			var wg sync.WaitGroup
			for range tt.parallel {
				wg.Add(1)
				go func() {
					defer wg.Done()
					code, e := call(t, h, tok, "POST", "/v1/apply?filename=hostile.yaml", tt.body)
					if msg := e.Error + strings.Join(e.Details, "; "); code != http.StatusBadRequest || !strings.Contains(msg, tt.want) {
						t.Errorf("apply: %d %s; want 400 saying %q", code, msg, tt.want)
					}
				}()
			}
			wg.Wait()
			grew := peak()
			t.Logf("%d applies at once of %d bytes: the heap grew by %d MiB at most", tt.parallel, len(tt.body), grew>>20)
			if grew > 400<<20 {
				t.Errorf("%d hostile applies of %d bytes grew the heap by %d MiB; want it bounded (400 MiB)", tt.parallel, len(tt.body), grew>>20)
			}
		})
	}
}

// watchHeap samples the heap's live and dead objects every millisecond
// until the returned func is called, which returns how far the heap grew
// over its size when watchHeap was called.
func watchHeap() func() uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	base := read()
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		var top uint64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if v := read(); v > top {
				top = v
			}
			select {
			case <-stop:
				done <- top
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(stop)
		if top := <-done; top > base {
			return top - base
		}
		return 0
	}
}
