package agent

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/pki"
)

// errRenewed ends a session so the next one uses the renewed certificate.
var errRenewed = errors.New("node certificate renewed; reconnecting with it")

// renewWhenDue renews the node certificate when two thirds of its lifetime
// have passed, retrying failures every so often until it expires. It
// returns errRenewed after a renewal, or ctx's error.
func (a *Agent) renewWhenDue(ctx context.Context, conn *grpc.ClientConn, id *pki.Identity) error {
	retry := min(max(a.clock.Until(id.NotAfter)/10, 100*time.Millisecond), time.Minute)
	t := a.clock.NewTimer(a.clock.Until(id.RenewAt()))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.Chan():
		}
		err := a.renew(ctx, conn, id)
		if err == nil {
			return errRenewed
		}
		a.log.Warn("renewing node certificate; will retry", "err", err, "expires", id.NotAfter, "retry_in", retry)
		t.Reset(retry)
	}
}

// renew asks the server for a new certificate for the node's existing key
// and stores it; only node.crt changes, so a crash midway loses nothing.
func (a *Agent) renew(ctx context.Context, conn *grpc.ClientConn, id *pki.Identity) error {
	key, ok := id.Certificate.PrivateKey.(crypto.Signer)
	if !ok {
		return errors.New("node key cannot sign")
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := agentproto.NewAgentClient(conn).Renew(ctx, &agentproto.RenewRequest{Csr: csr})
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(a.cfg.DataDir, pki.CACertFile))
	if err != nil {
		return fmt.Errorf("reading CA certificate: %w", err)
	}
	renewed, err := pki.SaveIdentity(a.cfg.DataDir, key, resp.Certificate, caPEM)
	if err != nil {
		return fmt.Errorf("saving renewed certificate: %w", err)
	}
	a.log.Info("node certificate renewed", "expires", renewed.NotAfter)
	return nil
}
