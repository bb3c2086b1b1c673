-- +goose Up
-- observed_at is when the agent observed the instance's last recorded
-- status, by the agent's clock (Unix nanoseconds; 0 before the first, and
-- again after the instance moves to another spec). A status observed
-- before it, delivered late (handed from one leader to the next through
-- the store), does not overwrite the newer one.
ALTER TABLE instances ADD COLUMN observed_at BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE instances DROP COLUMN observed_at;
