package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/store"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// Revisions and events do not grow the store for ever: the server prunes
// them to Config's bounds (review finding 14: they were never pruned).
func TestHistoryIsPruned(t *testing.T) {
	old := pruneInterval
	pruneInterval = 50 * time.Millisecond
	t.Cleanup(func() { pruneInterval = old })
	cfg := Config{RevisionHistory: 3, MaxEvents: 5}
	f := startAbuseFleet(t, cfg)
	ctx := context.Background()

	const applies = 12
	for i := range applies {
		doc := fmt.Sprintf("apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  container: {image: hello:v1, args: [%d]}\n", i)
		// A rollout step may come between the apply's read and write: 409.
		for try := 0; ; try++ {
			_, err := f.api.Apply(ctx, "web.yaml", "", []byte(doc))
			var ae *client.APIError
			if errors.As(err, &ae) && ae.StatusCode == http.StatusConflict && try < 10 {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	testenv.Eventually(t, 30*time.Second, "the history to be pruned", func() error {
		revs, err := f.api.ListRevisions(ctx, "default", "web")
		if err != nil {
			return err
		}
		evs, err := f.srv.store.ListEvents(ctx, store.EventFilter{})
		if err != nil {
			return err
		}
		// The newest 3, and what the deployment still uses: its stable
		// revision and its rollout's.
		newest := len(revs) > 0 && revs[len(revs)-1].Number == applies
		if !newest || len(revs) > cfg.RevisionHistory+2 || len(evs) > cfg.MaxEvents {
			return fmt.Errorf("after %d applies the store holds %d revisions (newest kept: %v) and %d events; want at most %d revisions, the newest among them, and %d events",
				applies, len(revs), newest, len(evs), cfg.RevisionHistory+2, cfg.MaxEvents)
		}
		return nil
	})
	if f.countLines("pruned history") == 0 {
		t.Errorf("the server did not say it pruned history")
	}
}
