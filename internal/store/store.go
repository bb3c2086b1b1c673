// Package store persists dockfleet's objects. Store is the one contract,
// with two backends: SQLite, embedded, and PostgreSQL, which several server
// replicas can share (Open picks one from a URL). Both run the same SQL
// (sqlstore.go), a dialect holding what differs, and pass the same
// conformance suite in storetest. On PostgreSQL, transactions are
// serializable and run again when they lose a race, so they keep the
// guarantees of SQLite's one writer at a time.
//
// Every object carries a Version, bumped by each write: an update names the
// version it read and fails with ErrConflict when another write came between.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/audit"
)

// Errors every backend returns, matched with errors.Is.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
	ErrConflict = errors.New("store: version conflict")
	// ErrEnrolledAlready is what an Enroll check returns for an
	// enrollment that was recorded already (a retry whose first answer was
	// lost): Enroll then returns the existing node, writing nothing.
	ErrEnrolledAlready = errors.New("store: enrolled already")
)

// Store is the persistence every server component goes through.
type Store interface {
	Close() error
	StateSeqs

	Auth

	CreateEnrollToken(ctx context.Context, t api.EnrollToken, secretHash string) error
	ListEnrollTokens(ctx context.Context) ([]api.EnrollToken, error)
	RevokeEnrollToken(ctx context.Context, id string) error
	// Enroll runs check on enrollment token tokenID and, if it passes, counts
	// one use of the token and creates node n, all in one transaction, so a
	// token's use limit holds under concurrent enrollments. check also gets
	// the node already named n.Name, nil if none. A token bound to a node
	// (t.Node) creates nothing: it re-enrolls that node, which must exist,
	// raising its epoch by one and recording n's facts, and returns it.
	// A check that returns ErrEnrolledAlready gets the existing node back,
	// with nothing written and no use counted.
	Enroll(ctx context.Context, tokenID string, check func(t api.EnrollToken, secretHash string, existing *api.Node) error, n api.Node) (api.Node, error)

	GetNode(ctx context.Context, id string) (api.Node, error)
	ListNodes(ctx context.Context) ([]api.Node, error)
	// UpdateNode writes n if n.Version is still current and returns it with its new version.
	UpdateNode(ctx context.Context, n api.Node) (api.Node, error)
	// SetSeen records the nodes' heartbeat times, and the usage their
	// agents last reported where given, in one batch; unknown IDs are
	// ignored, and a time older than the stored one leaves it.
	SetSeen(ctx context.Context, seen map[string]Seen) error
	// RevokeNode marks node id revoked and adds it to the revoked
	// identities, with reason; revoking a revoked node changes nothing.
	RevokeNode(ctx context.Context, id, reason string, at time.Time) (api.Node, error)
	// DeleteNode deletes node id with its instances and adds it to the
	// revoked identities, all in one transaction.
	DeleteNode(ctx context.Context, id, reason string, at time.Time) error
	// SetNodeScheduling sets node id's scheduling to to, if it is one of
	// from (any, when from is empty), and returns the node as it is then.
	SetNodeScheduling(ctx context.Context, id string, from []api.NodeScheduling, to api.NodeScheduling) (api.Node, error)
	// ListRevokedNodes lists the revoked identities, removed nodes' too.
	ListRevokedNodes(ctx context.Context) ([]RevokedNode, error)
	// UpdateNodeStatuses records what agents told of their nodes (state,
	// host error, facts, last seen if later than stored) in one
	// transaction, whatever the nodes' versions; unknown IDs are ignored,
	// and a revoked node's state stays revoked.
	UpdateNodeStatuses(ctx context.Context, ss []NodeStatus) error

	GetDeployment(ctx context.Context, project, name string) (api.Deployment, error)
	// ListDeployments lists a project's deployments, or every project's when project is "".
	ListDeployments(ctx context.Context, project string) ([]api.Deployment, error)
	// PutDeployment creates d when d.Version is 0 (ErrExists if it exists) and
	// otherwise updates it if d.Version is current.
	PutDeployment(ctx context.Context, d api.Deployment) (api.Deployment, error)
	// DeleteDeployment deletes a deployment with its instances, revisions
	// and rollouts; its events stay, as history.
	DeleteDeployment(ctx context.Context, project, name string) error
	// ApplyRevision writes deployment d (created when d.Version is 0, else
	// updated if current), adds revision rev, marks the deployment's active
	// rollout superseded, and creates rollout ro, all in one transaction.
	ApplyRevision(ctx context.Context, d api.Deployment, rev api.Revision, ro api.Rollout, events []api.Event) (api.Deployment, error)
	GetRevision(ctx context.Context, project, deployment string, number int64) (api.Revision, error)
	// ListRevisions lists a deployment's revisions, oldest first.
	ListRevisions(ctx context.Context, project, deployment string) ([]api.Revision, error)
	// PruneRevisions deletes, in every deployment, the revisions older than
	// its keep newest, except its stable revision, those its running or
	// paused rollouts go from or to, and those an instance is on. It
	// returns how many it deleted.
	PruneRevisions(ctx context.Context, keep int) (int64, error)
	// PinRevisionDigest records the image digest of a revision, with the
	// node whose report pinned it, unless one is recorded already, and
	// returns the revision as it holds.
	PinRevisionDigest(ctx context.Context, project, deployment string, number int64, digest, nodeID, nodeName string) (api.Revision, error)

	// LatestRollout returns a deployment's newest rollout.
	LatestRollout(ctx context.Context, project, deployment string) (api.Rollout, error)
	// ActiveRollouts lists every running or paused rollout.
	ActiveRollouts(ctx context.Context) ([]api.Rollout, error)
	// StepRollout persists one step of a rollout in one transaction: the
	// rollout itself (if r.Version is current), the instances it moves to
	// other revisions, the deployment's new stable revision (when stable is
	// not nil), and its events.
	StepRollout(ctx context.Context, r api.Rollout, moves []InstanceMove, stable *int64, events []api.Event) (api.Rollout, error)

	// AppendEvents records events, giving them their sequence numbers.
	AppendEvents(ctx context.Context, events []api.Event) error
	// ListEvents lists events in sequence order.
	ListEvents(ctx context.Context, f EventFilter) ([]api.Event, error)
	// PruneEvents deletes the events older than before, and all but the
	// newest keep. It returns how many it deleted.
	PruneEvents(ctx context.Context, before time.Time, keep int) (int64, error)

	ListInstances(ctx context.Context, f InstanceFilter) ([]api.Instance, error)
	// ApplyPlacement creates add and deletes the instances remove in one transaction.
	ApplyPlacement(ctx context.Context, add []api.Instance, remove []string) error
	// SetInstanceRevision moves instances to another revision of their
	// deployment; their observed state starts again at pending.
	SetInstanceRevision(ctx context.Context, ids []string, revision int64, specHash string) error
	// UpdateInstanceStatus records what an agent observed of one of its
	// node's instances; ErrNotFound if the node has no such instance, or
	// if s.SpecHash is set and the instance has since moved to another spec
	// (a late report on a replaced container must not overwrite the new one's),
	// or if it was observed before the status recorded last, within minutes
	// (a report delivered late must not overwrite a newer one).
	UpdateInstanceStatus(ctx context.Context, s InstanceStatus) error
	// UpdateInstanceStatuses records many reports in one transaction and
	// says which of them matched an instance, by the same rules.
	UpdateInstanceStatuses(ctx context.Context, ss []InstanceStatus) ([]bool, error)

	// AcquireLease takes lease name for holder for ttl, by the store's
	// clock, if it is free or expired, renews it if holder holds it, and
	// returns it as it then is: held by holder or by another replica. A
	// lease that changes hands gets the next epoch.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error)
	// ReleaseLease ends holder's lease name of epoch, if it still holds it.
	ReleaseLease(ctx context.Context, name, holder string, epoch int64) error

	// What the server replicas sharing the store tell each other: which
	// replicas run, which holds each node's stream, the leader's desired
	// states for the others to deliver, and agents' reports for the leader.
	ReplicaSeen(ctx context.Context, r Replica) error
	ListReplicas(ctx context.Context) ([]Replica, error)
	DeleteReplica(ctx context.Context, id string) error
	UpdateSessions(ctx context.Context, ss []Session) error
	ListSessions(ctx context.Context) ([]Session, error)
	PutDesiredStates(ctx context.Context, ds []DesiredState) (int64, error)
	DeleteDesiredStates(ctx context.Context, nodeIDs []string) error
	DesiredSince(ctx context.Context, after int64) ([]DesiredState, int64, error)
	DesiredStates(ctx context.Context, nodeIDs []string) ([]DesiredState, error)
	AppendReports(ctx context.Context, rs []Report) error
	Reports(ctx context.Context, limit int) ([]Report, error)
	DeleteReports(ctx context.Context, seqs []int64) error

	// PutSealedIfAbsent stores sec unless a secret of its name is stored
	// already, and returns the one stored then, and whether it was sec.
	PutSealedIfAbsent(ctx context.Context, sec Sealed) (Sealed, bool, error)
	// GetSealed returns the sealed secret name; ErrNotFound if there is none.
	GetSealed(ctx context.Context, name string) (Sealed, error)
	// ReplaceSealed replaces the sealed secret old.Name with sec if it is
	// still old (its blob); ErrConflict if it changed meanwhile.
	ReplaceSealed(ctx context.Context, old, sec Sealed) error

	// RecordNodeCert records the newest certificate issued to a node.
	RecordNodeCert(ctx context.Context, c NodeCert) error
	// ListNodeCerts returns the newest certificate recorded of each node
	// the store has.
	ListNodeCerts(ctx context.Context) ([]NodeCert, error)
}

// Auth is who may do what (users, API tokens and sessions, roles,
// bindings, projects) and the audit log of what they did. Every write of
// an API request writes the request's audit record (WithAudit) in its
// transaction.
type Auth interface {
	CreateAPIToken(ctx context.Context, t api.APIToken, secretHash string) error
	GetAPIToken(ctx context.Context, id string) (api.APIToken, string, error)
	ListAPITokens(ctx context.Context, kind string) ([]api.APIToken, error)
	DeleteAPIToken(ctx context.Context, id string) error
	PruneAPITokens(ctx context.Context, before time.Time) (int64, error)

	CreateUser(ctx context.Context, u api.User, passwordHash string) error
	GetUser(ctx context.Context, name string) (api.User, string, error)
	ListUsers(ctx context.Context) ([]api.User, error)
	UpdateUser(ctx context.Context, name string, passwordHash *string, disabled *bool) (api.User, error)
	DeleteUser(ctx context.Context, name string) error

	PutRole(ctx context.Context, r api.Role, update bool) error
	GetRole(ctx context.Context, name string) (api.Role, error)
	ListRoles(ctx context.Context) ([]api.Role, error)
	DeleteRole(ctx context.Context, name string) error
	CreateBinding(ctx context.Context, b api.Binding) error
	ListBindings(ctx context.Context, subjects []string) ([]api.Binding, error)
	DeleteBinding(ctx context.Context, id string) error

	CreateProject(ctx context.Context, p api.Project) error
	GetProject(ctx context.Context, name string) (api.Project, error)
	ListProjects(ctx context.Context) ([]api.Project, error)
	DeleteProject(ctx context.Context, name string) error

	AppendAudit(ctx context.Context, r api.AuditRecord) error
	ListAudit(ctx context.Context, f AuditFilter) ([]api.AuditRecord, error)
	AuditHead(ctx context.Context) (audit.Head, error)
	SetAuditSink(sink func(api.AuditRecord))
}

// RevokedNode is a node identity the agent endpoint refuses.
type RevokedNode struct {
	ID     string
	Name   string
	Reason string
	At     time.Time
}

// Seen is when a node's agent was last heard from and, if known here, the
// usage it last reported; nil leaves the stored usage.
type Seen struct {
	At    time.Time
	Usage *api.Usage
}

// NodeStatus is what the controller learned of a node from its agent.
type NodeStatus struct {
	ID       string
	State    api.NodeState
	Error    string
	LastSeen time.Time
	// Facts are written when set.
	Facts *api.Facts
}

// InstanceMove moves an instance to another revision of its deployment.
type InstanceMove struct {
	ID       string
	Revision int64
	SpecHash string
}

// EventFilter selects events; empty fields match everything.
type EventFilter struct {
	Project    string
	Deployment string
	// After selects events with a greater sequence number.
	After int64
	// Limit caps the answer; 0 means 1000.
	Limit int
}

// InstanceFilter selects instances; empty fields match everything.
type InstanceFilter struct {
	Project    string
	Deployment string
	NodeID     string
}

// InstanceStatus is an agent's report on one instance.
type InstanceStatus struct {
	ID          string
	NodeID      string
	SpecHash    string
	State       api.InstanceState
	Reason      string
	ContainerID string
	ImageDigest string
	// Restarts is how many times the agent restarted the instance's container.
	Restarts int
	At       time.Time
}
