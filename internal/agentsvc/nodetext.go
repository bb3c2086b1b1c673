package agentsvc

import (
	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/termtext"
)

// Bounds of the strings a node sends, in bytes. What a node says is kept
// in memory and in the store, shown by the CLI and copied into events, so
// its size must not be the node's choice. A Docker error or an image
// reference fits easily.
const (
	MaxNodeImage = 512     // an image reference or digest
	MaxNodeText  = 1 << 10 // an error or a reason
	MaxNodeFact  = 256     // each string of Facts, a container ID
)

// cleanMessage bounds and escapes, in place, the strings of a node's
// message that the server keeps or shows. An ImagePull's image is left
// alone: it only ever matches a request the server made, or is dropped.
func (l *Limits) cleanMessage(nodeID string, m *agentproto.AgentMessage) {
	switch m := m.Msg.(type) {
	case *agentproto.AgentMessage_Hello:
		l.cleanFacts(nodeID, m.Hello.Facts)
		for _, st := range m.Hello.Instances {
			l.cleanStatus(nodeID, st)
		}
	case *agentproto.AgentMessage_Heartbeat:
		l.cleanFacts(nodeID, m.Heartbeat.Facts)
		l.clean(nodeID, "heartbeat.error", &m.Heartbeat.Error, MaxNodeText)
	case *agentproto.AgentMessage_Status:
		l.cleanStatus(nodeID, m.Status)
	case *agentproto.AgentMessage_Pulled:
		l.clean(nodeID, "pulled.digest", &m.Pulled.Digest, MaxNodeImage)
		l.clean(nodeID, "pulled.error", &m.Pulled.Error, MaxNodeText)
	}
}

func (l *Limits) cleanStatus(nodeID string, st *agentproto.InstanceStatus) {
	l.clean(nodeID, "status.instance_id", &st.InstanceId, MaxNodeFact)
	l.clean(nodeID, "status.reason", &st.Reason, MaxNodeText)
	l.clean(nodeID, "status.container_id", &st.ContainerId, MaxNodeFact)
	l.clean(nodeID, "status.image_digest", &st.ImageDigest, MaxNodeImage)
}

// cleanFacts bounds and escapes the strings of f, which may be nil.
func (l *Limits) cleanFacts(nodeID string, f *agentproto.Facts) {
	if f == nil {
		return
	}
	for field, p := range map[string]*string{"facts.agent_version": &f.AgentVersion, "facts.docker_version": &f.DockerVersion,
		"facts.os": &f.Os, "facts.arch": &f.Arch, "facts.hostname": &f.Hostname} {
		l.clean(nodeID, field, p, MaxNodeFact)
	}
}

// clean replaces *s with termtext.Escape(*s, max) and says so, sparsely, when
// that changed it. nodeID is empty for a node still enrolling.
func (l *Limits) clean(nodeID, field string, s *string, max int) {
	c, changed := termtext.Escape(*s, max)
	if !changed {
		return
	}
	kept, _ := termtext.Escape(c, 64)
	l.textLog.Warn("cut or escaped a string an agent sent: over its bound or with control characters",
		"node_id", nodeID, "field", field, "bytes", len(*s), "max_bytes", max, "kept", kept)
	*s = c
}
