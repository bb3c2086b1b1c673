package client

import (
	"context"
	"net/http"

	"github.com/dockfleet/dockfleet/internal/api"
)

// AcceptRestore makes the server's store, restored from an older backup,
// rule over the agents that hold because they applied a newer state: they
// apply the store's state, removing what it does not know.
func (c *Client) AcceptRestore(ctx context.Context) (api.AcceptRestore, error) {
	var out api.AcceptRestore
	err := c.do(ctx, http.MethodPost, path("v1", "store", "accept-restore"), nil, nil, "", &out)
	return out, err
}
