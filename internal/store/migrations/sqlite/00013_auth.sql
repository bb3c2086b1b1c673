-- +goose Up
-- API tokens become credentials of several kinds (api.TokenAPI, TokenSession,
-- TokenBootstrap). The tokens from before are the bootstrap admin token.
ALTER TABLE api_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'bootstrap';
ALTER TABLE api_tokens ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE api_tokens ADD COLUMN project TEXT NOT NULL DEFAULT '*';
ALTER TABLE api_tokens ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX api_tokens_owner ON api_tokens (owner);

CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL, -- argon2id, PHC string; '' for an SSO user
    disabled      INTEGER NOT NULL,
    sso           INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    version       INTEGER NOT NULL
);

-- Custom roles; the built-in ones are in the code (package authz).
CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    permissions TEXT NOT NULL, -- JSON list
    created_at  INTEGER NOT NULL
);

CREATE TABLE bindings (
    id         TEXT PRIMARY KEY,
    subject    TEXT NOT NULL, -- user:NAME or group:NAME
    role       TEXT NOT NULL,
    project    TEXT NOT NULL, -- '*' for every project
    created_at INTEGER NOT NULL,
    UNIQUE (subject, role, project)
);

CREATE TABLE projects (
    name          TEXT PRIMARY KEY,
    node_selector TEXT NOT NULL, -- JSON spec.Selector
    created_at    INTEGER NOT NULL
);
-- Every installation has the default project, and the projects its
-- deployments already name.
INSERT INTO projects (name, node_selector, created_at) VALUES ('default', '{}', 0);
INSERT INTO projects (name, node_selector, created_at)
    SELECT DISTINCT project, '{}', 0 FROM deployments WHERE project <> 'default';

-- The audit log, chained by hash (package audit); audit_head is its
-- newest record, so that one cut off the end shows too.
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    project    TEXT NOT NULL,
    source     TEXT NOT NULL,
    result     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY,
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '');

-- +goose Down
DROP TABLE audit_head;
DROP TABLE audit;
DROP TABLE projects;
DROP TABLE bindings;
DROP TABLE roles;
DROP TABLE users;
DROP INDEX api_tokens_owner;
ALTER TABLE api_tokens DROP COLUMN expires_at;
ALTER TABLE api_tokens DROP COLUMN groups;
ALTER TABLE api_tokens DROP COLUMN project;
ALTER TABLE api_tokens DROP COLUMN role;
ALTER TABLE api_tokens DROP COLUMN owner;
ALTER TABLE api_tokens DROP COLUMN kind;
