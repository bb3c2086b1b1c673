// Package agentsvc serves the agent protocol (gRPC over mTLS): enrollment,
// certificate renewal and each agent's stream. It owns what guards the
// agent endpoint: the node gate, which keeps revoked and replaced node
// identities off it, and the limits of one source address and one node.
// Package server binds the listener and mounts the service.
package agentsvc

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/controller"
	"github.com/dockfleet/dockfleet/internal/fanout"
	"github.com/dockfleet/dockfleet/internal/liveness"
	"github.com/dockfleet/dockfleet/internal/pki"
	"github.com/dockfleet/dockfleet/internal/sparselog"
	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/store"
)

// Service serves the agent protocol. It holds what it uses: the store, the
// CA roots that sign node certificates, the gate that refuses revoked
// identities, the source and message limits, and the fleet's parts that
// agents feed (liveness, fan-out, controller).
type Service struct {
	agentproto.UnimplementedAgentServer
	store    store.Store
	ca       *pki.Authority
	gate     *Gate
	live     *liveness.Registry
	out      *fanout.Fanout
	ctl      *controller.Controller
	enrolled func(api.Node)
	limits   *Limits
	log      *slog.Logger
	// heartbeatInterval is what agents are told to keep; certTTL the
	// lifetime of the certificates the service signs.
	heartbeatInterval, certTTL time.Duration
	// maxAgents caps the streams served at once; 0: no cap.
	maxAgents    int
	onSession    func(ctx context.Context, nodeID string, open bool)
	onReenrolled func()
	// overloads logs the agents turned away by maxAgents.
	overloads *sparselog.Log

	streamsMu sync.Mutex
	streams   map[*agentStream]bool // the connected agents'
	// draining is set by Drain: new streams are told to go, each within
	// drainWithin.
	draining    bool
	drainWithin time.Duration
	// asked counts the streams Drain told to go that are still open;
	// drained is closed when it reaches zero.
	asked   int
	drained chan struct{}
	// senders are Drain's goroutines that send GoAway.
	senders sync.WaitGroup
}

// Deps are what a Service uses; every field is required.
type Deps struct {
	Store store.Store
	// CA holds the roots: the active one signs node certificates, and
	// agents are told to trust all that are trusted (Trust).
	CA   *pki.Authority
	Gate *Gate
	// Live learns of connections and heartbeats, Out holds the agents'
	// streams, and Ctl takes their instance statuses and pull answers.
	Live *liveness.Registry
	Out  *fanout.Fanout
	Ctl  *controller.Controller
	// Enrolled registers a newly enrolled node with the fleet.
	Enrolled func(api.Node)
	Limits   *Limits
	Logger   *slog.Logger
	// HeartbeatInterval is what agents are told to keep; CertTTL the
	// lifetime of the node certificates the service signs.
	HeartbeatInterval, CertTTL time.Duration
	// MaxAgents, if above zero, caps the agents connected at once: one
	// more is told to go to another server (GoAway, ReasonOverloaded).
	// It is optional.
	MaxAgents int
	// OnSession, if set, is told when a node's stream opens here (before
	// it is sent anything) and when it ends: the replicas of a cluster
	// record which holds each node, and give a new stream its node's
	// desired state from the store. It is optional.
	OnSession func(ctx context.Context, nodeID string, open bool)
	// OnReenrolled, if set, is told that a node re-enrolled here: the
	// other replicas of a cluster must refuse its old certificates too.
	// It is optional.
	OnReenrolled func()
}

// New makes the agent service of d.
func New(d Deps) *Service {
	return &Service{store: d.Store, ca: d.CA, gate: d.Gate, live: d.Live, out: d.Out, ctl: d.Ctl, enrolled: d.Enrolled,
		limits: d.Limits, log: d.Logger, heartbeatInterval: d.HeartbeatInterval, certTTL: d.CertTTL,
		maxAgents: d.MaxAgents, onSession: d.OnSession, onReenrolled: d.OnReenrolled, overloads: sparselog.New(d.Logger, LimitLogInterval), streams: map[*agentStream]bool{}}
}

func checkVersion(v uint32) error {
	if v < agentproto.MinVersion || v > agentproto.Version {
		return status.Errorf(codes.FailedPrecondition,
			"agent protocol version %d is not served here: this server speaks versions %d to %d; upgrade the agent or the server",
			v, agentproto.MinVersion, agentproto.Version)
	}
	return nil
}

var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$`)

// nodeIDRE matches what newID makes. No node may take such a name: the API
// looks nodes up by ID first, so a name equal to another node's ID would let
// an operator's command land on the wrong node.
var nodeIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// Enroll checks an enrollment token and signs the agent's CSR with a
// certificate naming its new node ID. What costs nothing comes first: the
// source's failure count, then the token's form and CA fingerprint; the
// store, which compares the secret in constant time, comes last.
func (a *Service) Enroll(ctx context.Context, req *agentproto.EnrollRequest) (_ *agentproto.EnrollResponse, err error) {
	if err := a.limits.enrollBlocked(ctx); err != nil {
		return nil, err
	}
	defer func() {
		if status.Code(err) == codes.Unauthenticated {
			a.limits.enrollFailed(ctx)
		}
	}()
	if err := checkVersion(req.ProtocolVersion); err != nil {
		return nil, err
	}
	a.limits.cleanFacts("", req.Facts)
	if req.Token == "" {
		return nil, status.Error(codes.Unauthenticated, "an enrollment token is required (dockfleet token create)")
	}
	fp, tokenID, secret, err := pki.ParseEnrollToken(req.Token)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	roots := a.ca.Roots()
	if !roots.Trusts(fp) {
		if roots.Knows(fp) {
			return nil, status.Error(codes.Unauthenticated, "the enrollment token was made before this server's CA was rotated, and names a root it no longer trusts: make a new token (dockfleet token create)")
		}
		return nil, status.Error(codes.Unauthenticated, "the enrollment token was made by another server (its CA fingerprint differs)")
	}
	if !nodeNameRE.MatchString(req.Name) {
		return nil, status.Errorf(codes.InvalidArgument, "node name %q is invalid: use 1-63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit", req.Name)
	}
	if nodeIDRE.MatchString(req.Name) {
		return nil, status.Errorf(codes.InvalidArgument, "node name %q is invalid: 16 lowercase hex digits is the form of a node ID; choose another --name", req.Name)
	}
	for k, v := range req.Labels {
		if err := spec.ValidateLabelKey(k); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "label %q: %v", k, err)
		}
		if err := spec.ValidateLabelValue(v); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "label %s=%q: %v", k, v, err)
		}
	}
	// A CSR the CA cannot sign is refused before the store counts a use of
	// the token or records the node.
	csr, err := pki.CheckCSR(req.Csr)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate request: %v", err)
	}

	now := time.Now().UTC()
	node := api.Node{ID: controller.NewID(), Name: req.Name, Labels: map[string]string{}, State: api.NodeReady,
		LastSeen: now, CreatedAt: now, Facts: factsFromProto(req.Facts), KeyID: pki.KeyID(csr)}
	retried := false
	check := func(t api.EnrollToken, hash string, existing *api.Node) error {
		retried = false // the store may run the check again
		switch {
		case !pki.SecretMatches(secret, hash):
			return status.Errorf(codes.Unauthenticated, "enrollment token %s is not valid", tokenID)
		case t.Revoked:
			return status.Errorf(codes.Unauthenticated, "enrollment token %s was revoked", tokenID)
		case !t.ExpiresAt.IsZero() && now.After(t.ExpiresAt):
			return status.Errorf(codes.Unauthenticated, "enrollment token %s expired at %s", tokenID, t.ExpiresAt.Format(time.RFC3339))
		case t.Node == "" && existing != nil && existing.KeyID == node.KeyID && existing.State != api.NodeRevoked:
			// The same key enrolled this name already: an agent retrying
			// an enrollment whose answer it never got (it gave up waiting
			// while the store recorded it). It gets the same node, and
			// the token's use is not counted twice.
			retried = true
			return store.ErrEnrolledAlready
		case t.MaxUses > 0 && t.Uses >= t.MaxUses:
			return status.Errorf(codes.Unauthenticated, "enrollment token %s is used up (%d of %d uses)", tokenID, t.Uses, t.MaxUses)
		}
		if t.Node != "" {
			return checkReEnroll(t, req, existing)
		}
		if existing != nil {
			return nameTaken(req.Name)
		}
		// The token decides the labels: its own, and the values an agent
		// asks for only of the keys it lets agents choose.
		if err := tokenAllows(t, req.Labels); err != nil {
			return err
		}
		for k, v := range req.Labels {
			node.Labels[k] = v
		}
		for k, v := range t.Labels {
			node.Labels[k] = v
		}
		return nil
	}
	enrolled, err := a.store.Enroll(ctx, tokenID, check, node)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, status.Errorf(codes.Unauthenticated, "enrollment token %s is not known to this server", tokenID)
	case errors.Is(err, store.ErrExists):
		return nil, nameTaken(req.Name)
	case err != nil && ctx.Err() != nil:
		// The agent gave up waiting (a crowd enrolling at once) or the
		// server is stopping. Not a server fault worth an ERROR line: at
		// 40,000 agents enrolling on two cores these come by the dozen.
		a.log.Info("enrollment abandoned: the agent went away or the server is stopping", "token_id", tokenID, "name", req.Name, "err", context.Cause(ctx))
		return nil, status.FromContextError(ctx.Err()).Err()
	case err != nil:
		if _, ok := status.FromError(err); ok {
			a.log.Warn("enrollment refused", "token_id", tokenID, "name", req.Name, "err", err)
			return nil, err
		}
		// A store that is busy (a crowd of agents enrolling at once) is
		// worth a retry; Unavailable makes the agent back off and try again
		// instead of taking it as a refusal.
		a.log.Error("enrollment failed", "token_id", tokenID, "name", req.Name, "err", err)
		return nil, status.Error(codes.Unavailable, "enrollment could not be recorded now; retrying is safe")
	}
	node = enrolled
	signer, caPEM := issuer(roots, req.ProtocolVersion)
	cert, err := signer.SignNode(req.Csr, node.ID, node.Epoch, a.certTTL)
	if err == nil {
		a.recordCert(ctx, node.ID, signer, cert)
	}
	if err == nil && retried {
		a.log.Info("node enrollment retried with the same key: the same node, a new certificate", "node_id", node.ID, "name", node.Name, "token_id", tokenID)
		return &agentproto.EnrollResponse{NodeId: node.ID, Certificate: cert, CaCertificate: caPEM}, nil
	}
	if errors.Is(err, pki.ErrBadCSR) {
		return nil, status.Errorf(codes.InvalidArgument, "certificate request: %v", err)
	}
	if err != nil {
		a.log.Error("signing node certificate", "node_id", node.ID, "err", err)
		return nil, status.Error(codes.Internal, "signing the node certificate failed; see the server log")
	}
	if node.Epoch > 0 {
		// The certificates of the node's earlier epochs are refused from
		// now on, and the connections made with them closed.
		a.gate.reenrolled(node.ID, node.Epoch)
		if a.onReenrolled != nil {
			a.onReenrolled()
		}
		a.log.Info("node re-enrolled", "node_id", node.ID, "name", node.Name, "epoch", node.Epoch, "token_id", tokenID)
		a.ctl.Need(controller.ReloadNodes)
		return &agentproto.EnrollResponse{NodeId: node.ID, Certificate: cert, CaCertificate: caPEM}, nil
	}
	a.log.Info("node enrolled", "node_id", node.ID, "name", node.Name, "labels", node.Labels, "token_id", tokenID)
	a.enrolled(node)
	return &agentproto.EnrollResponse{NodeId: node.ID, Certificate: cert, CaCertificate: caPEM}, nil
}

// nameTaken refuses a new node the name of an enrolled one.
func nameTaken(name string) error {
	return status.Errorf(codes.AlreadyExists, "a node named %q is already enrolled; start this agent with another --name, "+
		"or, to recover that node (its certificate expired or was lost), enroll with a token made for it: dockfleet token create --node %s",
		name, name)
}

// checkReEnroll checks an enrollment with a token made for one node: the
// agent must ask for that node's name, the node must exist and not be
// revoked, and the agent cannot change its labels (it may repeat them).
func checkReEnroll(t api.EnrollToken, req *agentproto.EnrollRequest, existing *api.Node) error {
	switch {
	case req.Name != t.Node:
		return status.Errorf(codes.PermissionDenied, "enrollment token %s re-enrolls node %q only, not %q; start the agent with --name %s",
			t.ID, t.Node, req.Name, t.Node)
	case existing == nil:
		return status.Errorf(codes.FailedPrecondition, "no node named %q is enrolled to re-enroll; enroll it with a token made without --node", t.Node)
	case existing.State == api.NodeRevoked:
		return status.Errorf(codes.FailedPrecondition, "node %q was revoked and cannot re-enroll; remove it (dockfleet node rm %s) and enroll the host as a new node",
			t.Node, t.Node)
	}
	for _, k := range slices.Sorted(maps.Keys(req.Labels)) {
		if v, ok := existing.Labels[k]; !ok || v != req.Labels[k] {
			return status.Errorf(codes.InvalidArgument, "label %s=%s: a re-enrolling node keeps its labels (%s); change them with dockfleet node label",
				k, req.Labels[k], labelList(existing.Labels))
		}
	}
	return nil
}

// tokenAllows checks the labels an agent asks for against what the token
// lets it choose: the value the token sets for a key, or any value of a key
// in its AgentLabels ("*": any key).
func tokenAllows(t api.EnrollToken, labels map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		v := labels[k]
		if tv, ok := t.Labels[k]; ok {
			if tv != v {
				return status.Errorf(codes.InvalidArgument, "label %s=%s: enrollment token %s sets %s=%s; drop the label or ask for that value", k, v, t.ID, k, tv)
			}
			continue
		}
		if !slices.Contains(t.AgentLabels, k) && !slices.Contains(t.AgentLabels, "*") {
			allowed := "no label keys"
			if len(t.AgentLabels) > 0 {
				allowed = "the label keys " + strings.Join(t.AgentLabels, ", ")
			}
			return status.Errorf(codes.InvalidArgument, "label %s=%s: enrollment token %s lets agents choose %s (and sets %s); "+
				"drop the label, set it later with dockfleet node label, or enroll with a token made with --agent-labels %s",
				k, v, t.ID, allowed, labelList(t.Labels), k)
		}
	}
	return nil
}

// labelList writes labels as k=v,k2=v2, sorted, or "none".
func labelList(labels map[string]string) string {
	if len(labels) == 0 {
		return "none"
	}
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		kv = append(kv, k+"="+labels[k])
	}
	return strings.Join(kv, ",")
}

// peerNodeID reads the node ID and certificate epoch from the verified
// client certificate, and refuses a node the gate refuses.
func (a *Service) peerNodeID(ctx context.Context) (string, int64, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", 0, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", 0, status.Error(codes.Unauthenticated, "the agent protocol needs TLS")
	}
	id, epoch, err := pki.PeerNode(info.State)
	if err != nil {
		return "", 0, status.Errorf(codes.Unauthenticated, "a node client certificate is required; enroll first: %v", err)
	}
	if err := a.gate.Check(id, epoch); err != nil {
		return "", 0, status.Error(codes.PermissionDenied, err.Error())
	}
	return id, epoch, nil
}

// status hands an instance status to the controller. That waits when the
// controller is behind with its writes (thousands of agents reporting at
// once), and the agent's heartbeats wait behind it: the wait is not
// counted as the node's silence.
func (a *Service) status(ctx context.Context, nodeID string, st *agentproto.InstanceStatus) {
	done := a.live.Busy(nodeID)
	defer done()
	a.ctl.Status(ctx, nodeID, st)
}

// enrolledNode checks that node id is enrolled: in memory, which knows
// every node this server enrolled or loaded, or else in the store.
func (a *Service) enrolledNode(ctx context.Context, id string) error {
	if a.live.Known(id) {
		return nil
	}
	_, err := a.store.GetNode(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.PermissionDenied, "node %s is not enrolled with this server", id)
	case err != nil:
		a.log.Error("reading node", "node_id", id, "err", err)
		return status.Error(codes.Unavailable, "reading the node failed; retrying is safe")
	}
	return nil
}

// Connect serves one agent's stream for as long as it stays up.
func (a *Service) Connect(stream agentproto.Agent_ConnectServer) error {
	ctx := stream.Context()
	nodeID, _, err := a.peerNodeID(ctx)
	if err != nil {
		return err
	}
	if err := a.enrolledNode(ctx, nodeID); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message on the stream must be hello")
	}
	if err := checkVersion(hello.ProtocolVersion); err != nil {
		return err
	}
	a.limits.cleanMessage(nodeID, first)
	log := a.log.With("node_id", nodeID)
	st := &agentStream{stream: stream, version: hello.ProtocolVersion}
	if err := a.admit(st, nodeID); err != nil {
		st.end()
		return err
	}
	defer a.leave(st)
	a.live.Connected(nodeID, factsFromProto(hello.Facts))
	defer a.live.Disconnected(nodeID)
	// Setting the session up reads the store, which is slow when thousands
	// connect at once: that time is ours, not the agent's silence.
	setUp := a.live.Busy(nodeID)
	defer setUp()
	sess := a.out.Connect(nodeID)
	defer a.out.Disconnect(sess)
	if a.onSession != nil {
		a.onSession(ctx, nodeID, true)
		defer a.onSession(context.WithoutCancel(ctx), nodeID, false)
	}
	log.Info("agent connected", "generation", hello.Generation)
	if err := st.Send(&agentproto.ServerMessage{Msg: &agentproto.ServerMessage_Welcome{Welcome: &agentproto.Welcome{
		ProtocolVersion: agentproto.Version, NodeId: nodeID, HeartbeatIntervalMs: a.heartbeatInterval.Milliseconds()}}}); err != nil {
		return err
	}
	if err := a.welcomed(st); err != nil {
		return err
	}
	sess.Start(st)
	defer sess.Stop()
	for _, st := range hello.Instances {
		a.status(ctx, nodeID, st)
	}
	// An agent ahead of the store holds what it is sent; its node says so
	// at once, not at its first heartbeat.
	if held := a.ctl.AgentStateSeq(ctx, nodeID, hello.StateSeq); held != "" {
		a.live.Heartbeat(nodeID, liveness.Heartbeat{Error: held})
	}
	setUp()

	for {
		msg, err := stream.Recv()
		if err != nil {
			// Drain logs the agents it told to go by their count.
			if a.toldToGo(st) {
				log.Debug("agent disconnected", "reason", err)
			} else {
				log.Info("agent disconnected", "reason", err)
			}
			return nil
		}
		if err := sess.Err(); err != nil {
			return err
		}
		if err := a.limits.message(nodeID); err != nil {
			return err
		}
		a.limits.cleanMessage(nodeID, msg)
		switch m := msg.Msg.(type) {
		case *agentproto.AgentMessage_Heartbeat:
			hb := heartbeatFromProto(m.Heartbeat)
			if held := a.ctl.AgentStateSeq(ctx, nodeID, m.Heartbeat.StateSeq); held != "" {
				hb.Error = strings.TrimPrefix(hb.Error+"; "+held, "; ")
			}
			a.live.Heartbeat(nodeID, hb)
		case *agentproto.AgentMessage_Ack:
			a.out.Ack(nodeID, m.Ack.Generation)
		case *agentproto.AgentMessage_Status:
			a.status(ctx, nodeID, m.Status)
		case *agentproto.AgentMessage_Pulled:
			a.ctl.Pulled(nodeID, m.Pulled)
		case *agentproto.AgentMessage_Hello:
			return status.Error(codes.InvalidArgument, "hello sent twice")
		}
	}
}

func factsFromProto(f *agentproto.Facts) api.Facts {
	if f == nil {
		return api.Facts{}
	}
	return api.Facts{AgentVersion: f.AgentVersion, DockerVersion: f.DockerVersion, OS: f.Os, Arch: f.Arch,
		Hostname: f.Hostname, CPUs: int(f.Cpus), MemoryBytes: f.MemoryBytes}
}

func heartbeatFromProto(hb *agentproto.Heartbeat) liveness.Heartbeat {
	out := liveness.Heartbeat{Error: hb.Error}
	if u := hb.Usage; u != nil {
		out.Usage = &api.Usage{CPUPercent: u.CpuPercent, MemoryBytes: u.MemoryBytes, Containers: int(u.Containers)}
	}
	if hb.Facts != nil {
		facts := factsFromProto(hb.Facts)
		out.Facts = &facts
	}
	return out
}

// Renew signs a fresh certificate for the node its current one names.
func (a *Service) Renew(ctx context.Context, req *agentproto.RenewRequest) (*agentproto.RenewResponse, error) {
	nodeID, epoch, err := a.peerNodeID(ctx)
	if err != nil {
		return nil, err
	}
	node, err := a.store.GetNode(ctx, nodeID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, status.Errorf(codes.PermissionDenied, "node %s is not enrolled with this server", nodeID)
		}
		return nil, status.Error(codes.Internal, "reading node; see the server log")
	}
	// The gate refused the node if it was revoked or re-enrolled since;
	// the store says so too, for a node revoked a moment ago.
	if node.State == api.NodeRevoked || epoch != node.Epoch {
		a.log.Warn("renewal refused", "node_id", nodeID, "state", node.State, "cert_epoch", epoch, "epoch", node.Epoch)
		return nil, status.Errorf(codes.PermissionDenied, "node %s may not renew its certificate: it was revoked or re-enrolled", nodeID)
	}
	signer, caPEM := issuer(a.ca.Roots(), req.ProtocolVersion)
	cert, err := signer.SignNode(req.Csr, nodeID, node.Epoch, a.certTTL)
	if errors.Is(err, pki.ErrBadCSR) {
		return nil, status.Errorf(codes.InvalidArgument, "certificate request: %v", err)
	}
	if err != nil {
		a.log.Error("signing node certificate", "node_id", nodeID, "err", err)
		return nil, status.Error(codes.Internal, "signing the node certificate failed; see the server log")
	}
	a.recordCert(ctx, nodeID, signer, cert)
	a.log.Info("node certificate renewed", "node_id", nodeID, "ca", signer.Fingerprint())
	resp := &agentproto.RenewResponse{Certificate: cert}
	if req.ProtocolVersion >= trustVersion {
		resp.CaCertificates = caPEM
	}
	return resp, nil
}
