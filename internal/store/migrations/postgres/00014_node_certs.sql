-- +goose Up
-- node_certs records, for each node, the CA root that issued its newest
-- certificate (the root's fingerprint) and when that certificate expires:
-- a CA rotation finishes only once every node holds one of the new root.
-- A node without a row was last issued a certificate before the record was
-- kept, by an older root.
CREATE TABLE node_certs (
    node_id   TEXT PRIMARY KEY,
    ca        TEXT NOT NULL,
    issued_at BIGINT NOT NULL,  -- Unix nanoseconds
    not_after BIGINT NOT NULL   -- Unix nanoseconds
);

-- +goose Down
DROP TABLE node_certs;
