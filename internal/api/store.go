package api

// AcceptRestore is the answer to POST /v1/store/accept-restore: what
// accepting a store restored from an older backup did.
type AcceptRestore struct {
	// Accepted is false when nothing was held (no agent was ahead of the
	// store, and it was not born held from a backup): nothing changed.
	Accepted bool `json:"accepted"`
	// FromStateSeq is the state sequence desired states carried before,
	// ToStateSeq the one they carry from now on, above every sequence an
	// agent reported.
	FromStateSeq uint64 `json:"fromStateSeq"`
	ToStateSeq   uint64 `json:"toStateSeq"`
	// Nodes are the IDs of the nodes that were held; their agents now
	// apply the store's state, removing what it does not know.
	Nodes []string `json:"nodes"`
}
