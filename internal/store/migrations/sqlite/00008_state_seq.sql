-- +goose Up
-- state_seq is the store's state sequence: one row whose seq grows with
-- every write that changes what a node should run. Agents remember the
-- highest they applied; a store restored from an older backup brings an
-- older seq back, and agents hold what it sends instead of removing what it
-- does not know. held is the seq the server sends while so held (0: not
-- held), frozen so that writes made since cannot overtake the agents'
-- sequences; ahead is the highest sequence an agent reported above it.
CREATE TABLE state_seq (
	id    INTEGER PRIMARY KEY CHECK (id = 1),
	seq   INTEGER NOT NULL,
	held  INTEGER NOT NULL DEFAULT 0,
	ahead INTEGER NOT NULL DEFAULT 0
);
INSERT INTO state_seq (id, seq) VALUES (1, 1);

-- +goose Down
DROP TABLE state_seq;
