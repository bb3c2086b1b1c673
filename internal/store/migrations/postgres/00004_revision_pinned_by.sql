-- +goose Up
ALTER TABLE revisions ADD COLUMN pinned_by TEXT NOT NULL DEFAULT '';
ALTER TABLE revisions ADD COLUMN pinned_by_name TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE revisions DROP COLUMN pinned_by_name;
ALTER TABLE revisions DROP COLUMN pinned_by;
