-- +goose Up
ALTER TABLE instances ADD COLUMN image_digest TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE instances DROP COLUMN image_digest;
