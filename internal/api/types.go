// Package api holds dockfleet's object model as the REST API serves it: nodes,
// deployments, instances and enrollment tokens. The server, the store and the
// Go client share these types, so the JSON a user sees is the JSON we store.
package api

import (
	"time"

	"github.com/dockfleet/dockfleet/internal/spec"
)

// DefaultProject is the project of objects that name none.
const DefaultProject = "default"

// NodeState is a node's liveness as the server sees it.
type NodeState string

// Node states.
const (
	NodeReady       NodeState = "ready"
	NodeUnreachable NodeState = "unreachable"
	// NodeRevoked is a node whose identity an operator revoked: its
	// certificates are refused and its instances count as lost.
	NodeRevoked NodeState = "revoked"
)

// Node is one enrolled Docker host.
type Node struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Labels   map[string]string `json:"labels"`
	State    NodeState         `json:"state"`
	LastSeen time.Time         `json:"lastSeen"`
	// Error is the agent's last reported problem with its host (Docker
	// unreachable, say); empty when all is well.
	Error     string    `json:"error,omitempty"`
	Facts     Facts     `json:"facts"`
	Usage     Usage     `json:"usage"`
	CreatedAt time.Time `json:"createdAt"`
	// Epoch counts the node's re-enrollments (a token made for it with
	// token create --node); certificates issued in an earlier epoch are
	// refused.
	Epoch int64 `json:"epoch,omitempty"`
	// Scheduling says whether the node takes new work; empty means it does.
	Scheduling NodeScheduling `json:"scheduling,omitempty"`
	// KeyID identifies the key the node enrolled with (pki.KeyID): a
	// retried enrollment sends the same.
	KeyID string `json:"-"`
	// Version is bumped by every store write, for optimistic concurrency.
	Version int64 `json:"version"`
}

// NodeScheduling is whether a node takes new work, as an operator set it
// with node cordon, drain and uncordon.
type NodeScheduling string

// Node scheduling settings; the zero value takes new work.
const (
	// NodeCordoned takes no new instances; those it runs stay.
	NodeCordoned NodeScheduling = "cordoned"
	// NodeDraining takes no new instances; its replicated instances are
	// moving to other nodes, then its global ones stop.
	NodeDraining NodeScheduling = "draining"
	// NodeDrained is a draining node with nothing left on it.
	NodeDrained NodeScheduling = "drained"
)

// Facts describe a node's host; the agent reports them.
type Facts struct {
	AgentVersion  string `json:"agentVersion"`
	DockerVersion string `json:"dockerVersion"`
	OS            string `json:"os"`
	Arch          string `json:"arch"`
	Hostname      string `json:"hostname"`
	CPUs          int    `json:"cpus"`
	MemoryBytes   int64  `json:"memoryBytes"`
}

// Usage is a node's load at its last heartbeat.
type Usage struct {
	CPUPercent  float64 `json:"cpuPercent"`
	MemoryBytes int64   `json:"memoryBytes"`
	Containers  int     `json:"containers"`
}

// EnrollToken lets agents enroll. Its secret is shown once, at creation; the
// store keeps only a hash.
type EnrollToken struct {
	ID     string            `json:"id"`
	Labels map[string]string `json:"labels,omitempty"`
	// AgentLabels are the label keys whose values an enrolling agent may
	// choose (its --labels); "*" allows any key. An agent may ask for
	// nothing else but the token's own Labels.
	AgentLabels []string `json:"agentLabels,omitempty"`
	// Node, when set, makes the token re-enroll the existing node of that
	// name (same ID, labels and instances) instead of enrolling a new one.
	Node string `json:"node,omitempty"`
	// ExpiresAt zero means the token never expires.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// MaxUses zero means unlimited.
	MaxUses   int       `json:"maxUses"`
	Uses      int       `json:"uses"`
	Revoked   bool      `json:"revoked"`
	CreatedAt time.Time `json:"createdAt"`
	// Token is the full token an agent passes with --token; set only in the
	// answer to a create.
	Token string `json:"token,omitempty"`
}

// Deployment is a named, applied spec.
type Deployment struct {
	Project string `json:"project"`
	Name    string `json:"name"`
	// Revision is the newest revision: it counts the applies (and undos)
	// that changed the spec; the first is 1. Spec is that revision's spec.
	Revision int64 `json:"revision"`
	// StableRevision is the revision instances return to outside a rollout:
	// the last one a rollout completed, 0 before the first did.
	StableRevision int64           `json:"stableRevision"`
	Spec           spec.Deployment `json:"spec"`
	CreatedAt      time.Time       `json:"createdAt"`
	UpdatedAt      time.Time       `json:"updatedAt"`
	Version        int64           `json:"version"`
}

// InstanceState is an instance's observed state, as its agent reports it.
type InstanceState string

// Instance states. Pending is the state of an instance the agent has not
// reported on yet.
const (
	InstancePending   InstanceState = "pending"
	InstancePulling   InstanceState = "pulling"
	InstanceStarting  InstanceState = "starting"
	InstanceRunning   InstanceState = "running"
	InstanceHealthy   InstanceState = "healthy"
	InstanceUnhealthy InstanceState = "unhealthy"
	InstanceFailed    InstanceState = "failed"
	InstanceStopped   InstanceState = "stopped"
)

// Instance is one placement of a deployment's revision on a node.
type Instance struct {
	ID         string `json:"id"`
	Project    string `json:"project"`
	Deployment string `json:"deployment"`
	NodeID     string `json:"nodeId"`
	// NodeName is filled in by the API for display.
	NodeName string `json:"nodeName,omitempty"`
	Revision int64  `json:"revision"`
	// SpecHash identifies the container spec this instance must run; the
	// agent replaces a container whose hash differs.
	SpecHash    string        `json:"specHash"`
	State       InstanceState `json:"state"`
	Reason      string        `json:"reason,omitempty"`
	ContainerID string        `json:"containerId,omitempty"`
	// ImageDigest is the image the instance runs, pinned by digest, as its agent reported it.
	ImageDigest string    `json:"imageDigest,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
	Version     int64     `json:"version"`
	// Restarts is how many times the agent restarted the instance's container.
	Restarts int `json:"restarts,omitempty"`
}

// Error is the body of every non-2xx API answer.
type Error struct {
	Error string `json:"error"`
	// Details lists every problem when there are several (spec validation).
	Details []string `json:"details,omitempty"`
}

// LabelPatch edits a node's labels: Set adds or replaces, Remove deletes.
type LabelPatch struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// TokenRequest asks for a new enrollment token.
type TokenRequest struct {
	// TTL is a Go duration ("1h"); empty means an hour. The server
	// refuses one longer than its --max-token-ttl.
	TTL string `json:"ttl,omitempty"`
	// Uses is how many enrollments the token allows; 0 means one.
	Uses   int               `json:"uses,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// AgentLabels and Node: see EnrollToken.
	AgentLabels []string `json:"agentLabels,omitempty"`
	Node        string   `json:"node,omitempty"`
}

// Revision is an immutable snapshot of a deployment's spec.
type Revision struct {
	Project    string          `json:"project"`
	Deployment string          `json:"deployment"`
	Number     int64           `json:"number"`
	Spec       spec.Deployment `json:"spec"`
	// ImageDigest is the image reference pinned by digest
	// (name@sha256:...) every instance of the revision runs; empty until
	// resolved at apply or reported by the first agent that pulled it.
	ImageDigest string `json:"imageDigest,omitempty"`
	// PinnedBy and PinnedByName are the ID and name of the node whose
	// report pinned ImageDigest; empty when the server resolved it.
	PinnedBy     string `json:"pinnedBy,omitempty"`
	PinnedByName string `json:"pinnedByName,omitempty"`
	// Cause says what made it: "apply", "undo to revision 2".
	Cause     string    `json:"cause"`
	CreatedAt time.Time `json:"createdAt"`
}

// RolloutState is where a rollout stands.
type RolloutState string

// Rollout states. Running and Paused are active; the others are final.
const (
	RolloutRunning    RolloutState = "running"
	RolloutPaused     RolloutState = "paused"
	RolloutSucceeded  RolloutState = "succeeded"
	RolloutFailed     RolloutState = "failed"
	RolloutRolledBack RolloutState = "rolled_back"
	RolloutAborted    RolloutState = "aborted"
	RolloutSuperseded RolloutState = "superseded"
)

// Final reports whether the state is an end state.
func (s RolloutState) Final() bool { return s != RolloutRunning && s != RolloutPaused }

// Rollout phases.
const (
	PhasePrePull           = "pre-pull"
	PhaseCanary            = "canary"
	PhaseAwaitingPromotion = "awaiting-promotion"
	PhaseBatches           = "batches"
	PhaseRollingBack       = "rolling-back"
	PhaseDone              = "done"
)

// Rollout moves a deployment's instances from one revision to another, in
// health-gated batches; the server persists it at every step.
type Rollout struct {
	ID         string       `json:"id"`
	Project    string       `json:"project"`
	Deployment string       `json:"deployment"`
	From       int64        `json:"fromRevision"`
	To         int64        `json:"toRevision"`
	State      RolloutState `json:"state"`
	Phase      string       `json:"phase"`
	// Batch is the number of the current (or last) batch, from 1;
	// Batches how many the rollout plans in all.
	Batch   int `json:"batch"`
	Batches int `json:"batches"`
	// Progress over the deployment's instances at the last step.
	Total   int `json:"total"`
	Updated int `json:"updated"`
	Healthy int `json:"healthy"`
	Failed  int `json:"failed"`
	// Message says what the rollout waits for, or why it ended as it did.
	Message string `json:"message,omitempty"`
	// BatchInstances are the instances of the batch in flight.
	BatchInstances []string  `json:"batchInstances,omitempty"`
	BatchStarted   time.Time `json:"batchStarted,omitzero"`
	// NextBatchAt holds the next batch back until then (batchDelay).
	NextBatchAt time.Time `json:"nextBatchAt,omitzero"`
	// LastProgress is when an instance last became healthy or was moved;
	// progressDeadline counts from it.
	LastProgress time.Time `json:"lastProgress,omitzero"`
	// Promoted is set once the canary was promoted.
	Promoted bool `json:"promoted,omitempty"`
	// PrePulled are the nodes that have the new image (pre-pull phase).
	PrePulled []string `json:"prePulled,omitempty"`
	// PullFailed are the instances whose node could not pull the new image;
	// they count as failed and stay on their revision.
	PullFailed []string `json:"pullFailed,omitempty"`
	// FailedInstances are the instances this rollout saw fail, each reported once.
	FailedInstances []string  `json:"failedInstances,omitempty"`
	CreatedAt       time.Time `json:"createdAt"`
	UpdatedAt       time.Time `json:"updatedAt"`
	Version         int64     `json:"version"`
}

// Event is one step of what happened to a deployment. Seq orders events
// server-wide; a follower asks for those after the last it saw.
type Event struct {
	Seq        int64     `json:"seq"`
	Time       time.Time `json:"time"`
	Project    string    `json:"project"`
	Deployment string    `json:"deployment"`
	Rollout    string    `json:"rollout,omitempty"`
	// Type is a short dotted name: rollout.started, batch.started,
	// batch.healthy, instance.failed, rollout.succeeded, ...
	Type    string `json:"type"`
	Message string `json:"message"`
}

// UndoRequest asks to roll a deployment back.
type UndoRequest struct {
	// ToRevision 0 means the revision before the current stable one.
	ToRevision int64 `json:"toRevision,omitempty"`
}

// Apply actions.
const (
	ActionCreated    = "created"
	ActionConfigured = "configured"
	ActionUnchanged  = "unchanged"
)

// ApplyResult says what an apply did to one deployment.
type ApplyResult struct {
	Project  string `json:"project"`
	Name     string `json:"name"`
	Action   string `json:"action"`
	Revision int64  `json:"revision"`
	// Rollout is the ID of the rollout the apply started, if any.
	Rollout string `json:"rollout,omitempty"`
	// Warnings are what the user should know of an apply that succeeded,
	// e.g. that its image was not resolved to a digest at apply.
	Warnings []string `json:"warnings,omitempty"`
}

// ApplyResponse is the answer to POST /v1/apply.
type ApplyResponse struct {
	Results []ApplyResult `json:"results"`
}

// DeploymentStatus is a deployment with its instances.
type DeploymentStatus struct {
	Deployment Deployment `json:"deployment"`
	Instances  []Instance `json:"instances"`
	// ImageDigest, PinnedBy and PinnedByName are those of the newest
	// revision (see Revision), as stored.
	ImageDigest  string `json:"imageDigest,omitempty"`
	PinnedBy     string `json:"pinnedBy,omitempty"`
	PinnedByName string `json:"pinnedByName,omitempty"`
}
