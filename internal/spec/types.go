package spec

import "time"

// APIVersion is the only apiVersion spec v1 accepts.
const APIVersion = "dockfleet.io/v1"

// KindDeployment is the kind of a Deployment document.
const KindDeployment = "Deployment"

// Mode says how a deployment's instances are placed on nodes.
type Mode string

// Placement modes.
const (
	// ModeGlobal runs one instance on every ready node the selector matches.
	ModeGlobal Mode = "global"
	// ModeReplicated runs Replicas instances spread over matching ready nodes.
	ModeReplicated Mode = "replicated"
)

// Deployment is one parsed, defaulted and validated Deployment document.
// The JSON form is what the server stores and what the REST API returns.
type Deployment struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   Metadata       `json:"metadata"`
	Spec       DeploymentSpec `json:"spec"`
}

// Metadata names a deployment and the project it belongs to.
type Metadata struct {
	Name string `json:"name"`
	// Project defaults to "default".
	Project string            `json:"project"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// DeploymentSpec is what to run and where.
type DeploymentSpec struct {
	Mode Mode `json:"mode"`
	// Replicas is the instance count in replicated mode; zero in global mode.
	Replicas  int       `json:"replicas,omitempty"`
	Selector  Selector  `json:"selector"`
	Container Container `json:"container"`
	// Update says how a change of the container rolls out over the instances.
	Update Update `json:"update"`
	// ImagePolicy says who may pin the image to a digest: the server
	// only, nodes too when the server cannot reach the registry, or no
	// one; empty means the server's default (dockfleet server
	// --image-policy).
	ImagePolicy ImagePolicy `json:"imagePolicy,omitempty"`
}

// ImagePolicy says what may pin a deployment's image to a digest.
type ImagePolicy string

// Image policies.
const (
	// ImagePolicyResolveOnServer pins only what the server resolves at
	// apply: an apply whose registry the server cannot reach is refused.
	ImagePolicyResolveOnServer ImagePolicy = "resolveOnServer"
	// ImagePolicyPinFromNodes lets an apply whose registry the server
	// cannot reach go ahead: the first digest a node reports pulling, in
	// the image's own repository, is pinned for every other node.
	ImagePolicyPinFromNodes ImagePolicy = "pinFromNodes"
	// ImagePolicyUnpinned pins nothing and asks no registry: every node
	// runs the tag as its own Docker has it, for images built on the
	// nodes and pushed nowhere.
	ImagePolicyUnpinned ImagePolicy = "unpinned"
)

// Valid reports whether p is one of the image policies.
func (p ImagePolicy) Valid() bool {
	return p == ImagePolicyResolveOnServer || p == ImagePolicyPinFromNodes || p == ImagePolicyUnpinned
}

// Update is a deployment's rollout strategy (DESIGN §6). Every field has a
// default; docs/spec.md says which and why.
type Update struct {
	// BatchSize is how many instances change at once: a count or a
	// percentage of the deployment's instances (rounded up, at least 1).
	BatchSize IntOrPercent `json:"batchSize"`
	// MaxUnavailable caps the instances that may be not healthy at once
	// during a rollout, counting those not healthy before it touched them.
	MaxUnavailable IntOrPercent `json:"maxUnavailable"`
	// Canary is the size of a first batch that must be healthy before the
	// rest; zero means no canary.
	Canary IntOrPercent `json:"canary"`
	// AutoPromote continues after a healthy canary without
	// `dockfleet rollout promote`.
	AutoPromote bool `json:"autoPromote"`
	// MinHealthyTime is how long an instance must stay healthy to count.
	MinHealthyTime Duration `json:"minHealthyTime"`
	// HealthyDeadline is how long an updated instance has to become healthy
	// before it counts as failed.
	HealthyDeadline Duration `json:"healthyDeadline"`
	// ProgressDeadline fails a rollout that makes no progress for this long,
	// e.g. while waiting for unreachable nodes.
	ProgressDeadline Duration `json:"progressDeadline"`
	// MaxFailureRatio is the fraction of instances (0 to 1) that may fail
	// before the rollout stops.
	MaxFailureRatio float64 `json:"maxFailureRatio"`
	// AutoRollback returns the changed instances to the previous revision
	// when the rollout fails.
	AutoRollback bool `json:"autoRollback"`
	// Order is stop-first (default) or start-first.
	Order Order `json:"order"`
	// PrePull pulls the new image on every target before the first batch.
	PrePull bool `json:"prePull"`
	// BatchDelay is a pause between batches.
	BatchDelay Duration `json:"batchDelay"`
}

// Order says whether a replaced instance stops before or after its
// replacement starts.
type Order string

// Update orders.
const (
	OrderStopFirst  Order = "stop-first"
	OrderStartFirst Order = "start-first"
)

// IntOrPercent is a count ("2", 2) or a percentage ("25%") of a total.
type IntOrPercent struct {
	Value   int
	Percent bool
}

// Selector picks nodes by their labels. The zero Selector matches every node.
type Selector struct {
	MatchLabels      map[string]string `json:"matchLabels,omitempty"`
	MatchExpressions []Requirement     `json:"matchExpressions,omitempty"`
}

// Operator is a selector requirement's operator.
type Operator string

// Selector operators, as in Kubernetes label selectors.
const (
	OpIn           Operator = "In"
	OpNotIn        Operator = "NotIn"
	OpExists       Operator = "Exists"
	OpDoesNotExist Operator = "DoesNotExist"
)

// Requirement is one matchExpressions entry.
type Requirement struct {
	Key      string   `json:"key"`
	Operator Operator `json:"operator"`
	Values   []string `json:"values,omitempty"`
}

// Container is the container every instance of a deployment runs.
type Container struct {
	Image         string            `json:"image"`
	Command       []string          `json:"command,omitempty"`
	Args          []string          `json:"args,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
	Ports         []Port            `json:"ports,omitempty"`
	Volumes       []Volume          `json:"volumes,omitempty"`
	Resources     Resources         `json:"resources"`
	RestartPolicy RestartPolicy     `json:"restartPolicy"`
	HealthCheck   *HealthCheck      `json:"healthCheck,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
}

// Port publishes a container port. HostPort zero means the port is not published on the host.
type Port struct {
	ContainerPort int    `json:"containerPort"`
	HostPort      int    `json:"hostPort,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
	// Protocol is "tcp" (default) or "udp".
	Protocol string `json:"protocol"`
}

// VolumeType says what a volume's source is.
type VolumeType string

// Volume types.
const (
	VolumeNamed VolumeType = "volume" // a Docker named volume
	VolumeBind  VolumeType = "bind"   // a host path
)

// Volume mounts a named volume or a host path into the container.
type Volume struct {
	Type     VolumeType `json:"type"`
	Source   string     `json:"source"`
	Target   string     `json:"target"`
	ReadOnly bool       `json:"readOnly,omitempty"`
}

// Resources limits a container. Zero values mean no limit.
type Resources struct {
	// CPUs is a fraction of CPUs, like docker run --cpus.
	CPUs float64 `json:"cpus,omitempty"`
	// Memory is written "128Mi" (also Ki, Gi, K, M, G or plain bytes).
	Memory ByteSize `json:"memory,omitempty"`
}

// RestartPolicy says when the agent restarts an exited container.
type RestartPolicy string

// Restart policies.
const (
	RestartAlways    RestartPolicy = "always"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartNever     RestartPolicy = "never"
)

// HealthCheck is a probe the agent runs against each instance. Exactly one of
// HTTP, TCP and Exec is set.
type HealthCheck struct {
	HTTP        *HTTPCheck `json:"http,omitempty"`
	TCP         *TCPCheck  `json:"tcp,omitempty"`
	Exec        *ExecCheck `json:"exec,omitempty"`
	Interval    Duration   `json:"interval"`
	Timeout     Duration   `json:"timeout"`
	Retries     int        `json:"retries"`
	StartPeriod Duration   `json:"startPeriod"`
}

// HTTPCheck passes when GET Path on Port answers 2xx or 3xx.
type HTTPCheck struct {
	Path string `json:"path"`
	Port int    `json:"port"`
}

// TCPCheck passes when a TCP connection to Port opens.
type TCPCheck struct {
	Port int `json:"port"`
}

// ExecCheck passes when Command, run inside the container, exits 0.
type ExecCheck struct {
	Command []string `json:"command"`
}

// Duration is a time.Duration written as "5s", "1m30s" in specs and JSON.
type Duration time.Duration

// ByteSize is a size in bytes written as "128Mi", "1G" or "1048576" in specs and JSON.
type ByteSize int64
