-- +goose Up
-- key_id identifies the public key a node enrolled with (pki.KeyID): an
-- enrollment retried after the first was recorded, but its answer lost,
-- sends the same key and gets the same node back.
ALTER TABLE nodes ADD COLUMN key_id TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE nodes DROP COLUMN key_id;
