-- +goose Up
-- server_secrets holds what every server replica of this store shares and
-- nobody else may read: each row is sealed (package seal) with the key of
-- the replicas' key file, key_id naming that key. Written once per name, by
-- the first replica to need it.
CREATE TABLE server_secrets (
    name       TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL,
    sealed     BYTEA NOT NULL,
    created_at BIGINT NOT NULL -- Unix nanoseconds
);

-- +goose Down
DROP TABLE server_secrets;
