package server

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/dockfleet/dockfleet/internal/agentproto"
)

// Bounds of the strings a node sends, in bytes. What a node says is kept
// in memory and in the store, shown by the CLI and copied into events, so
// its size must not be the node's choice. A Docker error or an image
// reference fits easily.
const (
	maxNodeImage = 512     // an image reference or digest
	maxNodeText  = 1 << 10 // an error or a reason
	maxNodeFact  = 256     // each string of Facts, a container ID
)

// nodeText returns s cut to at most max bytes and with its control
// characters and invalid UTF-8 escaped, and whether it had to change s.
// A node's strings reach operators' terminals (dockfleet nodes, events):
// an escape sequence in a hostname must not retitle or clear them.
func nodeText(s string, max int) (string, bool) {
	if len(s) <= max && printable(s) {
		return s, false
	}
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		esc := s[:n]
		switch {
		case r == utf8.RuneError && n == 1:
			esc = fmt.Sprintf(`\x%02x`, s[0])
		case unprintable(r):
			esc = fmt.Sprintf("%+q", r)
			esc = esc[1 : len(esc)-1] // '\x1b' → \x1b
		}
		if b.Len()+len(esc) > max-len("…") {
			b.WriteString("…")
			break
		}
		b.WriteString(esc)
		s = s[n:]
	}
	return b.String(), true
}

// printable reports whether s is valid UTF-8 free of what unprintable finds.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unprintable(r) {
			return false
		}
	}
	return true
}

// unprintable reports whether r may steer a terminal: a control character
// (C0, DEL, C1: escape sequences, carriage returns) or a bidirectional
// override that reorders what is shown.
func unprintable(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
}

// cleanMessage bounds and escapes, in place, the strings of a node's
// message that the server keeps or shows. An ImagePull's image is left
// alone: it only ever matches a request the server made, or is dropped.
func (l *agentLimits) cleanMessage(nodeID string, m *agentproto.AgentMessage) {
	switch m := m.Msg.(type) {
	case *agentproto.AgentMessage_Hello:
		l.cleanFacts(nodeID, m.Hello.Facts)
		for _, st := range m.Hello.Instances {
			l.cleanStatus(nodeID, st)
		}
	case *agentproto.AgentMessage_Heartbeat:
		l.cleanFacts(nodeID, m.Heartbeat.Facts)
		l.clean(nodeID, "heartbeat.error", &m.Heartbeat.Error, maxNodeText)
	case *agentproto.AgentMessage_Status:
		l.cleanStatus(nodeID, m.Status)
	case *agentproto.AgentMessage_Pulled:
		l.clean(nodeID, "pulled.digest", &m.Pulled.Digest, maxNodeImage)
		l.clean(nodeID, "pulled.error", &m.Pulled.Error, maxNodeText)
	}
}

func (l *agentLimits) cleanStatus(nodeID string, st *agentproto.InstanceStatus) {
	l.clean(nodeID, "status.instance_id", &st.InstanceId, maxNodeFact)
	l.clean(nodeID, "status.reason", &st.Reason, maxNodeText)
	l.clean(nodeID, "status.container_id", &st.ContainerId, maxNodeFact)
	l.clean(nodeID, "status.image_digest", &st.ImageDigest, maxNodeImage)
}

// cleanFacts bounds and escapes the strings of f, which may be nil.
func (l *agentLimits) cleanFacts(nodeID string, f *agentproto.Facts) {
	if f == nil {
		return
	}
	for field, p := range map[string]*string{"facts.agent_version": &f.AgentVersion, "facts.docker_version": &f.DockerVersion,
		"facts.os": &f.Os, "facts.arch": &f.Arch, "facts.hostname": &f.Hostname} {
		l.clean(nodeID, field, p, maxNodeFact)
	}
}

// clean replaces *s with nodeText(*s, max) and says so, sparsely, when
// that changed it. nodeID is empty for a node still enrolling.
func (l *agentLimits) clean(nodeID, field string, s *string, max int) {
	c, changed := nodeText(*s, max)
	if !changed {
		return
	}
	kept, _ := nodeText(c, 64)
	l.textLog.warn("cut or escaped a string an agent sent: over its bound or with control characters",
		"node_id", nodeID, "field", field, "bytes", len(*s), "max_bytes", max, "kept", kept)
	*s = c
}
