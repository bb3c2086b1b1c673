-- +goose Up
ALTER TABLE deployments ADD COLUMN stable_revision INTEGER NOT NULL DEFAULT 0;

CREATE TABLE revisions (
    project      TEXT NOT NULL,
    deployment   TEXT NOT NULL,
    number       INTEGER NOT NULL,
    spec         TEXT NOT NULL,
    image_digest TEXT NOT NULL,
    cause        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (project, deployment, number)
);

-- A rollout is kept whole as JSON; the columns are what queries select on.
CREATE TABLE rollouts (
    id         TEXT PRIMARY KEY,
    project    TEXT NOT NULL,
    deployment TEXT NOT NULL,
    state      TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    version    INTEGER NOT NULL
);
CREATE INDEX rollouts_deployment ON rollouts (project, deployment, created_at);
CREATE INDEX rollouts_state ON rollouts (state);

CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time       INTEGER NOT NULL,
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
