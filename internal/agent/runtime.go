package agent

import (
	"context"

	"github.com/dockfleet/dockfleet/internal/container"
)

// Runtime is what the agent needs from a container engine: the Docker adapter
// (dockerrt) in production, the in-memory runtime (fakert) in unit tests and
// simulated agents. Every method that names a container acts only on
// containers labelled with this node's ID.
type Runtime interface {
	// Info describes the host.
	Info(ctx context.Context) (container.HostInfo, error)
	// List returns every container labelled container.LabelNode=nodeID,
	// running or not.
	List(ctx context.Context, nodeID string) ([]container.State, error)
	// EnsureImage pulls ref unless the engine already has it, by its
	// digest when ref carries one, and returns the digest the engine knows
	// for ref's repository, pinned as "repository@sha256:…" in Docker's
	// familiar form ("hello@sha256:…", "127.0.0.1:5000/hello@sha256:…"),
	// or "" when it knows none: an image built on the host and never
	// pushed or pulled. It is what lets the server pin a revision whose
	// tag it could not resolve to the first digest an agent pulled.
	EnsureImage(ctx context.Context, ref string) (string, error)
	// Create creates a container and returns its ID; it does not start it.
	Create(ctx context.Context, cfg container.Config) (string, error)
	// Start starts a created or exited container.
	Start(ctx context.Context, nodeID, id string) error
	// Remove stops and removes a container, refusing one that nodeID does not own.
	Remove(ctx context.Context, nodeID, id string) error
	// Exec runs cmd in a running container and returns its exit code.
	Exec(ctx context.Context, nodeID, id string, cmd []string) (int, error)
	// Events sends on the returned channel whenever a container of nodeID
	// changes (created, started, died, destroyed); it is closed when ctx ends
	// or the event stream breaks, and the caller subscribes again.
	Events(ctx context.Context, nodeID string) (<-chan struct{}, error)
}
