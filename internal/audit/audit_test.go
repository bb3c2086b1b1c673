package audit

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
)

// chain makes n records chained as the store writes them.
func chain(n int) ([]api.AuditRecord, Head) {
	var (
		out  []api.AuditRecord
		head Head
	)
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	for i := range n {
		r := api.AuditRecord{Seq: head.Seq + 1, Time: t0.Add(time.Duration(i) * time.Second), Actor: "user:alice",
			Action: "POST /v1/apply", Target: fmt.Sprintf("deployment:web-%d", i), Project: "default", Source: "127.0.0.1",
			Result: "ok", RequestID: fmt.Sprint(i), PrevHash: head.Hash}
		r.Hash = Hash(r)
		out = append(out, r)
		head = Head{Seq: r.Seq, Hash: r.Hash}
	}
	return out, head
}

func verify(recs []api.AuditRecord, head Head) []string {
	var v Verifier
	for _, r := range recs {
		v.Add(r)
	}
	_, problems := v.Done(head)
	return problems
}

func TestVerify(t *testing.T) {
	recs, head := chain(5)
	if p := verify(recs, head); len(p) != 0 {
		t.Fatalf("a whole chain: %q; want no problem", p)
	}
	tests := []struct {
		name   string
		change func([]api.AuditRecord) []api.AuditRecord
		want   string
	}{
		{"edited", func(rs []api.AuditRecord) []api.AuditRecord { rs[2].Actor = "user:mallory"; return rs }, "record 3: its hash does not match its content"},
		{"edited and rehashed", func(rs []api.AuditRecord) []api.AuditRecord {
			rs[2].Result = "403 forbidden"
			rs[2].Hash = Hash(rs[2])
			return rs
		}, "record 4: its previous hash does not match record 3's hash"},
		{"deleted", func(rs []api.AuditRecord) []api.AuditRecord { return slices.Delete(rs, 1, 2) }, "records 2 to 2 are missing"},
		{"cut off the end", func(rs []api.AuditRecord) []api.AuditRecord { return rs[:4] }, "the log ends at record 4, but the newest record written was 5"},
		{"first deleted", func(rs []api.AuditRecord) []api.AuditRecord { return rs[1:] }, "records 1 to 1 are missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, _ := chain(5)
			p := verify(tt.change(rs), head)
			if !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, tt.want) }) {
				t.Errorf("problems %q; want one saying %q", p, tt.want)
			}
		})
	}
}

// Every field is covered by the hash, and no two fields can trade text.
func TestHashCoversEveryField(t *testing.T) {
	recs, _ := chain(1)
	r := recs[0]
	edits := []func(*api.AuditRecord){
		func(r *api.AuditRecord) { r.Seq++ },
		func(r *api.AuditRecord) { r.Time = r.Time.Add(time.Nanosecond) },
		func(r *api.AuditRecord) { r.Actor += "x" },
		func(r *api.AuditRecord) { r.Action += "x" },
		func(r *api.AuditRecord) { r.Target += "x" },
		func(r *api.AuditRecord) { r.Project += "x" },
		func(r *api.AuditRecord) { r.Source += "x" },
		func(r *api.AuditRecord) { r.Result += "x" },
		func(r *api.AuditRecord) { r.RequestID += "x" },
		func(r *api.AuditRecord) { r.PrevHash += "x" },
		func(r *api.AuditRecord) { r.Actor, r.Action = r.Actor+r.Action[:1], r.Action[1:] },
	}
	for i, edit := range edits {
		c := r
		edit(&c)
		if Hash(c) == r.Hash {
			t.Errorf("edit %d left the hash as it was", i)
		}
	}
}
