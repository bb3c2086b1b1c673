package restapi

import (
	"net/http"

	"github.com/dockfleet/dockfleet/internal/api"
)

// acceptRestore makes a store restored from an older backup rule over the
// agents that hold because they applied a newer state (controller.AcceptRestore).
func (s *Handler) acceptRestore(w http.ResponseWriter, r *http.Request) error {
	res, err := s.ctl.AcceptRestore(r.Context())
	if err != nil {
		return err
	}
	nodes := res.Nodes
	if nodes == nil {
		nodes = []string{}
	}
	writeJSON(w, http.StatusOK, api.AcceptRestore{Accepted: res.Accepted, FromStateSeq: res.From, ToStateSeq: res.To, Nodes: nodes})
	return nil
}
