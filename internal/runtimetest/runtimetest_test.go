package runtimetest_test

import (
	"github.com/dockfleet/dockfleet/internal/agent"
	"github.com/dockfleet/dockfleet/internal/dockerrt"
	"github.com/dockfleet/dockfleet/internal/fakert"
)

// Both runtimes are what the agent needs.
var (
	_ agent.Runtime = (*dockerrt.Client)(nil)
	_ agent.Runtime = (*fakert.Runtime)(nil)
)
