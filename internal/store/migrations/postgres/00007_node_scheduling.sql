-- +goose Up
-- scheduling is whether the node takes new work: '' (it does), 'cordoned',
-- 'draining' or 'drained' (api.NodeScheduling). A drain is level-triggered
-- from it, so a server restarted mid-drain goes on.
ALTER TABLE nodes ADD COLUMN scheduling TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE nodes DROP COLUMN scheduling;
