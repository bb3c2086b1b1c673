-- +goose Up
-- The server replicas that share this store. Each renews seen_at (Unix
-- nanoseconds, by the store's clock) every second while it runs.
CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    agent_addr TEXT NOT NULL,
    api_addr   TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL
);

-- Which replica holds each connected node's stream.
CREATE TABLE node_sessions (
    node_id TEXT PRIMARY KEY,
    replica TEXT NOT NULL,
    since   BIGINT NOT NULL
);
CREATE INDEX node_sessions_replica ON node_sessions (replica);

-- Each node's desired state as the leader last made it (an
-- agentproto.DesiredState), for the replica that holds the node's stream.
-- seq numbers the leader's writes: a replica reads those after the last it
-- delivered.
CREATE TABLE desired_states (
    node_id TEXT PRIMARY KEY,
    seq     BIGINT NOT NULL,
    key     TEXT NOT NULL,
    state   BYTEA NOT NULL
);
CREATE INDEX desired_states_seq ON desired_states (seq);

-- What agents told replicas other than the leader (agentproto.AgentMessage:
-- instance statuses, pull answers), queued for the leader in order.
CREATE TABLE agent_reports (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id TEXT NOT NULL,
    body    BYTEA NOT NULL
);

-- +goose Down
DROP TABLE agent_reports;
DROP TABLE desired_states;
DROP TABLE node_sessions;
DROP TABLE replicas;
