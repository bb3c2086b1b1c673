// Package container holds the runtime-neutral description of the containers an
// agent runs: what to create (Config), what it observes (State), and the labels
// that mark a container as dockfleet's. The Docker adapter (dockerrt) and the
// in-memory runtime (fakert) both speak these types, so the agent's reconcile
// loop runs unchanged on either.
package container

import "time"

// Labels dockfleet puts on every container it creates. A container is owned by
// a node's agent when LabelNode carries that node's ID; agents touch no other.
const (
	LabelManaged    = "dockfleet.managed" // "true"
	LabelNode       = "dockfleet.node"
	LabelInstance   = "dockfleet.instance"
	LabelDeployment = "dockfleet.deployment"
	LabelProject    = "dockfleet.project"
	LabelSpecHash   = "dockfleet.spec-hash"
)

// Config is a container to create.
type Config struct {
	Name    string
	Image   string
	Command []string // entrypoint override; nil keeps the image's
	Args    []string // cmd override; nil keeps the image's
	Env     map[string]string
	Labels  map[string]string
	Ports   []Port
	Mounts  []Mount
	// CPUs is a fraction of CPUs (docker run --cpus); zero is no limit.
	CPUs float64
	// MemoryBytes zero is no limit.
	MemoryBytes int64
}

// Port publishes ContainerPort on HostIP:HostPort. HostPort zero exposes the
// port without publishing it.
type Port struct {
	ContainerPort int
	HostPort      int
	HostIP        string
	Protocol      string // "tcp" or "udp"
}

// Mount is a named volume (Bind false) or a host path (Bind true).
type Mount struct {
	Bind     bool
	Source   string
	Target   string
	ReadOnly bool
}

// State is a container as the runtime sees it.
type State struct {
	ID     string
	Name   string
	Image  string // the reference it was created from
	Labels map[string]string
	// Running is true while the container's process runs.
	Running    bool
	ExitCode   int
	StartedAt  time.Time
	FinishedAt time.Time
	// Error is the runtime's reason for a failed start, if any.
	Error string
	// IP is the container's address on its network, for health probes;
	// empty when it is not running.
	IP string
}

// HostInfo is what the runtime knows of its host.
type HostInfo struct {
	RuntimeVersion string // Docker Engine version
	OS             string
	Arch           string
	CPUs           int
	MemoryBytes    int64
}
