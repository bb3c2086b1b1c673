// Package audit chains the audit log's records by hash: each record holds
// the hash of the one before and its own hash over its fields and that
// one, so a record edited, deleted or inserted in the store breaks the
// chain where it was touched, and a record cut off the end no longer
// matches the head the store keeps beside the log.
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
)

// Hash is the hash of r, over every field but Hash itself, PrevHash
// included. The fields are hashed as a JSON array, in a fixed order, so
// no field's value can pass for another's.
func Hash(r api.AuditRecord) string {
	b, _ := json.Marshal([]any{r.Seq, r.Time.UTC().Format(time.RFC3339Nano), r.Actor, r.Action, r.Target,
		r.Project, r.Source, r.Result, r.RequestID, r.PrevHash})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Head is the newest record's sequence number and hash, as the store
// keeps it beside the log.
type Head struct {
	Seq  int64
	Hash string
}

// Verifier checks records fed to it in sequence order, the first being
// the log's first (sequence 1).
type Verifier struct {
	last     Head
	problems []string
	n        int64
}

// maxProblems bounds what a verification reports: the first breaks tell
// where to look; ten thousand more tell nothing.
const maxProblems = 20

func (v *Verifier) problem(format string, a ...any) {
	if len(v.problems) < maxProblems {
		v.problems = append(v.problems, fmt.Sprintf(format, a...))
	}
}

// Add checks the next record.
func (v *Verifier) Add(r api.AuditRecord) {
	v.n++
	if r.Seq != v.last.Seq+1 {
		v.problem("record %d follows record %d: records %d to %d are missing", r.Seq, v.last.Seq, v.last.Seq+1, r.Seq-1)
	}
	if r.PrevHash != v.last.Hash {
		v.problem("record %d: its previous hash does not match record %d's hash: a record before it was changed or removed", r.Seq, v.last.Seq)
	}
	if Hash(r) != r.Hash {
		v.problem("record %d: its hash does not match its content: it was changed", r.Seq)
	}
	v.last = Head{Seq: r.Seq, Hash: r.Hash}
}

// Done checks the last record against the store's head and returns what
// was wrong, nothing if the log is whole.
func (v *Verifier) Done(head Head) (records int64, problems []string) {
	if head != v.last {
		v.problem("the log ends at record %d, but the newest record written was %d: records at the end were removed or changed", v.last.Seq, head.Seq)
	}
	return v.n, v.problems
}
