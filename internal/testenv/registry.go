package testenv

import (
	"context"
	"fmt"

	"github.com/dockfleet/dockfleet/internal/registry"
)

// NoRegistry is an image resolver (server.Config.Resolve) that asks no
// registry: it answers as a registry that cannot be reached does, so a
// server under test behaves as one offline (the default image policy,
// pinFromNodes, leaves the pin to the first node that pulls) and no test
// asks a public registry about an image, or depends on its answer.
func NoRegistry(_ context.Context, image string) (string, error) {
	return "", fmt.Errorf("resolving %s: a test server asks no registry: %w", image, registry.ErrUnreachable)
}
