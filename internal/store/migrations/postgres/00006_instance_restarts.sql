-- +goose Up
ALTER TABLE instances ADD COLUMN restarts BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE instances DROP COLUMN restarts;
