// Package agentproto holds the wire types of the agent protocol (generated from
// agent.proto by `make proto`) and its version history.
package agentproto

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative agent.proto

// Version is the protocol version this build speaks. An agent sends it in
// EnrollRequest and Hello; the server refuses versions outside
// [MinVersion, Version] with a message that says which it serves.
//
// History:
//   - 1 (2026-11-24): enrollment, one stream per agent with full desired state
//     per node, acks, instance status, heartbeats with facts and usage,
//     certificate renewal, image digests in instance status, pre-pull,
//     start-first replacement.
//   - 2 (2026-12-06): InstanceStatus carries the container's restart count
//     and the agent's own actions (restarted, recreated) as events; an exit
//     the agent restarts is reported starting, not failed. A version 1
//     agent still works: it reports neither, and its restarts fail rollouts.
//   - 3 (2026-12-07): DesiredState carries the store's state sequence, and
//     Hello and Heartbeat the highest one the agent applied: an agent holds
//     a desired state below it (a store restored from an older backup)
//     instead of removing what that store does not know. Older agents and
//     servers send 0, which is applied as before. GoAway in ServerMessage:
//     the server asks the agent to move to another of its servers (shutting
//     down, or over --max-agents); a version 2 agent ignores it, and its
//     stream ends when the server stops.
//   - 4 (2026-12-07): CA rotation. The server sends Trust, the CA roots to
//     trust (two while a rotation runs), after Welcome and when they change;
//     an agent whose certificate is not of the newest root renews it without
//     leaving its stream. RenewRequest says the agent's version, and
//     RenewResponse and EnrollResponse carry the roots. An agent renews at a
//     point between half and four fifths of its certificate's life, and keeps
//     its stream across the renewal (before, it reconnected). A version 3
//     agent ignores Trust; during a rotation it is given certificates of the
//     retiring root, the one it trusts, and must be upgraded before the
//     rotation can finish.
const Version = 4

// MinVersion is the oldest agent protocol version the server still serves.
const MinVersion = 1

// MaxServerMessage is the largest ServerMessage, a node's whole desired
// state, that an agent accepts. Agents built before it was set (2026-12-06)
// keep gRPC's default of 4 MiB; the server sends less than both.
const MaxServerMessage = 16 << 20
