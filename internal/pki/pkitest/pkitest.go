// Package pkitest makes the node keys and certificate requests that tests
// of enrollment need.
package pkitest

import (
	"crypto"
	"testing"

	"github.com/dockfleet/dockfleet/internal/pki"
)

// NodeCSR returns a new node key and a certificate request for it, as an
// agent makes them before it enrolls.
func NodeCSR(t testing.TB) (crypto.Signer, []byte) {
	t.Helper()
	key, err := pki.NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}
