-- +goose Up
ALTER TABLE deployments ADD COLUMN stable_revision BIGINT NOT NULL DEFAULT 0;

CREATE TABLE revisions (
    project      TEXT NOT NULL,
    deployment   TEXT NOT NULL,
    number       BIGINT NOT NULL,
    spec         TEXT NOT NULL,
    image_digest TEXT NOT NULL,
    cause        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (project, deployment, number)
);

-- A rollout is kept whole as JSON; the columns are what queries select on.
CREATE TABLE rollouts (
    id         TEXT PRIMARY KEY,
    project    TEXT NOT NULL,
    deployment TEXT NOT NULL,
    state      TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    version    BIGINT NOT NULL
);
CREATE INDEX rollouts_deployment ON rollouts (project, deployment, created_at);
CREATE INDEX rollouts_state ON rollouts (state);

-- The store inserts events with their seq taken from the identity under
-- an advisory lock held to commit (see postgres.go), so sequence numbers
-- become visible in order; a rolled-back insert leaves a gap.
CREATE TABLE events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time       BIGINT NOT NULL,
    project    TEXT NOT NULL,
    deployment TEXT NOT NULL,
    rollout    TEXT NOT NULL,
    type       TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX events_deployment ON events (project, deployment, seq);

-- +goose Down
DROP TABLE events;
DROP TABLE rollouts;
DROP TABLE revisions;
ALTER TABLE deployments DROP COLUMN stable_revision;
