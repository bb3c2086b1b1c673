-- +goose Up
-- A lease names the replica that does a job only one may do at a time
-- (the controller): it holds the lease until expires_at (Unix nanoseconds,
-- by the store's clock), and epoch grows each time the lease changes hands.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE leases;
