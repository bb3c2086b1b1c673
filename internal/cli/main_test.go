package cli

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/dockfleet/dockfleet/internal/pgtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(pgtest.Wrap(m))
}
