package servertest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/dockfleet/dockfleet/internal/registry"
	"github.com/dockfleet/dockfleet/internal/server"
	"github.com/dockfleet/dockfleet/internal/servertest"
	"github.com/dockfleet/dockfleet/internal/spec"
)

// TestStart checks that the fixture's server answers its client as the
// admin, that configure reaches the server, and that Stop ends it for
// good: a second Stop returns at once, and the API is gone.
func TestStart(t *testing.T) {
	type answer struct {
		image string
		err   error
	}
	answers := make(chan answer, 10)
	f := servertest.Start(t, func(cfg *server.Config) {
		next := cfg.Resolve
		cfg.Resolve = func(ctx context.Context, image string) (string, error) {
			digest, err := next(ctx, image)
			answers <- answer{image, err}
			return digest, err
		}
		cfg.ImagePolicy = spec.ImagePolicyResolveOnServer
	})
	ctx := context.Background()
	if _, err := f.Client.ListNodes(ctx); err != nil {
		t.Fatalf("listing nodes as the admin: %v", err)
	}
	// resolveOnServer refuses an image whose registry gives no answer,
	// and the fixture's registry never answers.
	const web = "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  container: {image: hello:v1}\n"
	if _, err := f.Client.Apply(ctx, "web.yaml", "", []byte(web)); err == nil {
		t.Error("apply with resolveOnServer and no registry: got no error; want a refusal")
	}
	select {
	case a := <-answers:
		if a.image != "hello:v1" || !errors.Is(a.err, registry.ErrUnreachable) {
			t.Errorf("resolving %s: %v; want hello:v1 and an error wrapping registry.ErrUnreachable", a.image, a.err)
		}
	default:
		t.Error("the server asked its resolver nothing")
	}
	if err := f.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := f.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := f.Client.ListNodes(ctx); err == nil {
		t.Error("the API answered after Stop")
	}
}
