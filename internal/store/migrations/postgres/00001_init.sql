-- +goose Up
-- One-to-one with migrations/sqlite: a version number means the same schema
-- on both engines. Integers are BIGINT (PostgreSQL's INTEGER is 32 bits;
-- times are Unix nanoseconds), flags BIGINT 0 or 1 as on SQLite, JSON TEXT.
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE enroll_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    labels      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL, -- Unix nanoseconds; 0 never expires
    max_uses    BIGINT NOT NULL, -- 0 unlimited
    uses        BIGINT NOT NULL,
    revoked     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE nodes (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    labels     TEXT NOT NULL,
    state      TEXT NOT NULL,
    last_seen  BIGINT NOT NULL,
    error      TEXT NOT NULL,
    facts      TEXT NOT NULL,
    usage      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    version    BIGINT NOT NULL
);

-- Every deployment belongs to a project from the first version on (DESIGN §3).
CREATE TABLE deployments (
    project    TEXT NOT NULL,
    name       TEXT NOT NULL,
    revision   BIGINT NOT NULL,
    spec       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    PRIMARY KEY (project, name)
);

CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    project      TEXT NOT NULL,
    deployment   TEXT NOT NULL,
    node_id      TEXT NOT NULL,
    revision     BIGINT NOT NULL,
    spec_hash    TEXT NOT NULL,
    state        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    container_id TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    version      BIGINT NOT NULL
);
CREATE INDEX instances_deployment ON instances (project, deployment);
CREATE INDEX instances_node ON instances (node_id);

-- +goose Down
DROP TABLE instances;
DROP TABLE deployments;
DROP TABLE nodes;
DROP TABLE enroll_tokens;
DROP TABLE api_tokens;
