-- +goose Up
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE enroll_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    labels      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL, -- Unix nanoseconds; 0 never expires
    max_uses    INTEGER NOT NULL, -- 0 unlimited
    uses        INTEGER NOT NULL,
    revoked     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE nodes (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    labels     TEXT NOT NULL,
    state      TEXT NOT NULL,
    last_seen  INTEGER NOT NULL,
    error      TEXT NOT NULL,
    facts      TEXT NOT NULL,
    usage      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    version    INTEGER NOT NULL
);

-- Every deployment belongs to a project from the first version on (DESIGN §3).
CREATE TABLE deployments (
    project    TEXT NOT NULL,
    name       TEXT NOT NULL,
    revision   INTEGER NOT NULL,
    spec       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    PRIMARY KEY (project, name)
);

CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    project      TEXT NOT NULL,
    deployment   TEXT NOT NULL,
    node_id      TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    spec_hash    TEXT NOT NULL,
    state        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    container_id TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    version      INTEGER NOT NULL
);
CREATE INDEX instances_deployment ON instances (project, deployment);
CREATE INDEX instances_node ON instances (node_id);

-- +goose Down
DROP TABLE instances;
DROP TABLE deployments;
DROP TABLE nodes;
DROP TABLE enroll_tokens;
DROP TABLE api_tokens;
