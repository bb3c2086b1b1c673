-- +goose Up
-- epoch counts a node's re-enrollments; its certificates name the epoch
-- they were issued in, and those of an earlier one are refused.
ALTER TABLE nodes ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;

-- node is the name of the node a re-enrollment token is for ('' for a token
-- that enrolls new nodes); agent_labels lists the label keys agents may
-- choose the values of (JSON array).
ALTER TABLE enroll_tokens ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE enroll_tokens ADD COLUMN agent_labels TEXT NOT NULL DEFAULT '[]';

-- The identities the agent endpoint refuses: revoked nodes, and removed
-- ones, whose rows are gone but whose certificates may still be out there.
CREATE TABLE revoked_nodes (
    node_id    TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    revoked_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE revoked_nodes;
ALTER TABLE enroll_tokens DROP COLUMN agent_labels;
ALTER TABLE enroll_tokens DROP COLUMN node;
ALTER TABLE nodes DROP COLUMN epoch;
