package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/dockfleet/dockfleet/internal/api"
)

// CA describes the fleet's CA: its roots, whether a rotation runs, and
// which nodes still hold certificates of an older root than the active one.
func (c *Client) CA(ctx context.Context) (api.CA, error) {
	var out api.CA
	err := c.do(ctx, http.MethodGet, "/v1/ca", nil, nil, "", &out)
	return out, err
}

// RotateCA starts a CA rotation: a new root signs node certificates, and
// the agents renew theirs with it while they stay connected. It is refused
// (a conflict) while a rotation runs.
func (c *Client) RotateCA(ctx context.Context) (api.CA, error) {
	var out api.CA
	err := c.do(ctx, http.MethodPost, "/v1/ca/rotate", nil, nil, "", &out)
	return out, err
}

// FinishCA ends a CA rotation: the old root is trusted no more. It is
// refused (a conflict) while nodes still hold certificates of the old root,
// unless force is set, which cuts those nodes off.
func (c *Client) FinishCA(ctx context.Context, force bool) (api.CA, error) {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	var out api.CA
	err := c.do(ctx, http.MethodPost, "/v1/ca/finish", q, nil, "", &out)
	return out, err
}
