package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
)

func newRolloutCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Follow, pause, resume, abort, promote and undo a deployment's rollouts",
		Long: `An apply that changes a deployment makes a new revision and rolls it out over
the deployment's instances in health-gated batches. These commands show and
steer a deployment's newest rollout, list its revisions, and roll it back to
an older one.`,
		Example: `  dockfleet rollout status web -w
  dockfleet rollout history web
  dockfleet rollout undo web --to-revision 2`,
	}
	makeGroup(cmd)
	e.addConnFlags(cmd.PersistentFlags(), true)
	cmd.AddCommand(
		newRolloutStatusCommand(e),
		newRolloutHistoryCommand(e),
		newRolloutUndoCommand(e),
		newRolloutActionCommand(e, client.ActionPause, "paused", "Pause a deployment's running rollout after its batch in flight"),
		newRolloutActionCommand(e, client.ActionResume, "resumed", "Resume a deployment's paused rollout"),
		newRolloutActionCommand(e, client.ActionAbort, "aborted", "Stop a deployment's rollout and return its changed instances to the stable revision"),
		newRolloutActionCommand(e, client.ActionPromote, "promoted", "Let a rollout awaiting promotion go on past its canary"),
	)
	return cmd
}

func newRolloutStatusCommand(e *env) *cobra.Command {
	var (
		watch   bool
		timeout time.Duration
		out     outputFormat
	)
	cmd := &cobra.Command{
		Use:   "status NAME [-w]",
		Short: "Show a deployment's newest rollout, or follow it to its end with -w",
		Long: `Show a deployment's newest rollout: the revisions it goes from and to, its
state and phase, its batch, and how many instances are updated, healthy and
failed.

With -w it follows the rollout until it ends, redrawing its progress on a
terminal (a line per change otherwise), and exits 0 if it succeeded and 1 if
it failed, was rolled back or aborted, or a newer apply superseded it.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < 0 {
				return usageErrorf("--timeout must not be negative")
			}
			if !watch && timeout > 0 {
				return usageErrorf("--timeout applies with --watch only")
			}
			if watch && out != outputTable {
				return usageErrorf("-o applies without --watch only")
			}
			c, project, err := e.client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if !watch {
				ro, err := c.GetRollout(ctx, project, args[0])
				if err != nil {
					return err
				}
				return render(e.stdout, out, ro, func() error {
					return writeRolloutStatus(e.stdout, args[0], ro, e.now())
				})
			}
			ctx, cancel := withWaitTimeout(ctx, timeout)
			defer cancel()
			_, err = e.followRollout(ctx, c, project, args[0], "")
			return err
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the rollout until it ends; exit 1 unless it succeeds")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --watch, give up after this long and exit 1 (0: no limit)")
	addOutputFlag(cmd.Flags(), &out)
	return cmd
}

func writeRolloutStatus(w io.Writer, name string, ro api.Rollout, now time.Time) error {
	f := newFields(w)
	f.add("Deployment", name)
	f.add("Rollout", ro.ID)
	f.add("Revision", revisionRange(ro))
	f.add("State", string(ro.State))
	f.add("Phase", orDash(ro.Phase))
	f.add("Batch", orDash(batchText(ro)))
	f.add("Updated", fmt.Sprintf("%d/%d", ro.Updated, ro.Total))
	f.add("Healthy", strconv.Itoa(ro.Healthy))
	f.add("Failed", strconv.Itoa(ro.Failed))
	f.add("Message", orDash(ro.Message))
	f.add("Started", timestamp(ro.CreatedAt, now))
	return f.flush()
}

// revisionRange writes the revisions a rollout goes between, "1 → 2", or
// "1 (first rollout)" for the first of a deployment.
func revisionRange(ro api.Rollout) string {
	if ro.From == 0 {
		return fmt.Sprintf("%d (first rollout)", ro.To)
	}
	return fmt.Sprintf("%d → %d", ro.From, ro.To)
}

// batchText writes "batch 2 of 4", or "" before the rollout planned any.
func batchText(ro api.Rollout) string {
	if ro.Batches == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d", ro.Batch, ro.Batches)
}

// rolloutSummary writes a rollout's progress on one line, without its
// message: "revision 1 → 2: running/batches, batch 2 of 4, updated 4/10,
// healthy 3, failed 0".
func rolloutSummary(ro api.Rollout) string {
	var b strings.Builder
	b.WriteString("revision " + revisionRange(ro) + ": " + string(ro.State))
	if ro.Phase != "" {
		b.WriteString("/" + ro.Phase)
	}
	if bt := batchText(ro); bt != "" {
		b.WriteString(", batch " + bt)
	}
	fmt.Fprintf(&b, ", updated %d/%d, healthy %d, failed %d", ro.Updated, ro.Total, ro.Healthy, ro.Failed)
	return b.String()
}

// progressLine is what rollout status -w draws: the deployment, the
// summary and the message.
func progressLine(name string, ro api.Rollout) string {
	s := "deployment/" + name + " " + rolloutSummary(ro)
	if ro.Message != "" {
		s += ": " + ro.Message
	}
	return s
}

// waitTimeout is the cause of a context ended by --timeout.
type waitTimeout struct{ d time.Duration }

func (w *waitTimeout) Error() string { return fmt.Sprintf("timed out after %s", w.d) }

// withWaitTimeout bounds ctx by a --timeout; zero is no bound.
func withWaitTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, d, &waitTimeout{d})
}

// followRollout polls a deployment's newest rollout until the rollout id
// ends (with id empty, the one the first poll finds), drawing its progress on
// e.stdout, and returns it as it ended. The error is nil only when it
// succeeded: it says how else it ended, or that ctx ended first (--timeout
// or an interrupt). A newer rollout of the deployment supersedes id.
//
// The first poll's error is returned as it is; later, while the server cannot
// be reached or fails, the polls go on.
func (e *env) followRollout(ctx context.Context, c *client.Client, project, name, id string) (api.Rollout, error) {
	p := e.newProgress()
	defer p.end()
	var (
		last api.Rollout
		seen bool
	)
	for {
		ro, err := c.GetRollout(ctx, project, name)
		switch {
		case err == nil:
			if id == "" {
				id = ro.ID
			}
			if ro.ID != id {
				// Only the newest rollout is served: a newer apply took over.
				if !seen {
					last = api.Rollout{ID: id, Project: project, Deployment: name}
				}
				last.State = api.RolloutSuperseded
				last.Message = fmt.Sprintf("rollout %s to revision %d took over", ro.ID, ro.To)
				ro = last
			}
			last, seen = ro, true
			p.show(progressLine(name, ro))
			if ro.State.Final() {
				p.end()
				return ro, e.rolloutEnded(name, ro)
			}
		case ctx.Err() != nil:
			return last, stoppedWaiting(ctx, name, id, last)
		case seen && transient(err):
			p.show(progressLine(name, last) + " (retrying: " + err.Error() + ")")
		default:
			return last, err
		}
		if err := sleep(ctx, e.pollInterval()); err != nil {
			return last, stoppedWaiting(ctx, name, id, last)
		}
	}
}

// rolloutEnded says how a rollout ended: on stdout if it succeeded, else as
// the error.
func (e *env) rolloutEnded(name string, ro api.Rollout) error {
	if ro.State == api.RolloutSucceeded {
		fmt.Fprintf(e.stdout, "rollout %s succeeded: deployment/%s is at revision %d\n", ro.ID, name, ro.To)
		return nil
	}
	s := fmt.Sprintf("rollout %s of deployment/%s %s", ro.ID, name, strings.ReplaceAll(string(ro.State), "_", " "))
	if ro.Message != "" {
		s += ": " + ro.Message
	}
	return errors.New(s)
}

// stoppedWaiting says why a wait for a rollout ended before the rollout did.
func stoppedWaiting(ctx context.Context, name, id string, last api.Rollout) error {
	what := "rollout of deployment/" + name
	if id != "" {
		what = "rollout " + id + " of deployment/" + name
	}
	if to, ok := errors.AsType[*waitTimeout](context.Cause(ctx)); ok {
		s := fmt.Sprintf("timed out after %s waiting for %s", to.d, what)
		if last.ID != "" {
			s += " (" + rolloutSummary(last) + ")"
		}
		return errors.New(s)
	}
	if last.ID == "" {
		return fmt.Errorf("interrupted before the first answer about the %s", what)
	}
	return fmt.Errorf("interrupted; %s is still %s", what, last.State)
}

// transient reports whether err may go away by itself: the server could not
// be reached, or failed.
func transient(err error) bool {
	if _, ok := errors.AsType[*client.ConnError](err); ok {
		return true
	}
	ae, ok := errors.AsType[*client.APIError](err)
	return ok && ae.StatusCode >= http.StatusInternalServerError
}

// sleep waits d, or until ctx ends and then returns its error.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// progress draws a status line that changes: on a terminal, redrawn in
// place; otherwise, written again on a new line each time it changes.
type progress struct {
	w io.Writer
	// width is the terminal's width in columns; nil when w is not one.
	width func() int
	last  string
	// open is set while a redrawn line lacks its newline.
	open bool
}

func (e *env) newProgress() *progress {
	p := &progress{w: e.stdout}
	if e.termWidth != nil && e.getenv("TERM") != "dumb" && e.termWidth() > 0 {
		p.width = e.termWidth
	}
	return p
}

func (p *progress) show(s string) {
	s = printable(s) // it quotes instances' errors, which nodes report
	if s == p.last && (p.width == nil || p.open) {
		return
	}
	p.last = s
	if p.width == nil {
		fmt.Fprintln(p.w, s)
		return
	}
	// A line that wraps cannot be redrawn with \r: cut it to fit.
	if w := p.width(); w > 1 && utf8.RuneCountInString(s) > w-1 {
		s = string([]rune(s)[:w-2]) + "…"
	}
	fmt.Fprint(p.w, "\r"+s+"\x1b[K")
	p.open = true
}

// end finishes a redrawn line, so that what is written next starts on a
// line of its own.
func (p *progress) end() {
	if p.open {
		fmt.Fprintln(p.w)
		p.open = false
	}
}

func newRolloutHistoryCommand(e *env) *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "history NAME",
		Short: "List a deployment's revisions",
		Long: `List a deployment's revisions, oldest first, with the image each runs (pinned
by digest once known) and what made it. STATUS marks the stable revision,
the one instances return to outside a rollout, and the newest.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, project, err := e.client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			st, err := c.GetDeployment(ctx, project, args[0])
			if err != nil {
				return err
			}
			revs, err := c.ListRevisions(ctx, project, args[0])
			if err != nil {
				return err
			}
			return render(e.stdout, out, revs, func() error {
				return writeRevisionTable(e.stdout, revs, st.Deployment, e.now())
			})
		},
	}
	addOutputFlag(cmd.Flags(), &out)
	return cmd
}

func writeRevisionTable(w io.Writer, revs []api.Revision, d api.Deployment, now time.Time) error {
	// CAUSE would go last as free text, but it is short; STATUS is mostly
	// "-" and reads best at the end.
	t := newTable(w, "REVISION", "CREATED", "IMAGE", "CAUSE", "STATUS")
	for _, r := range revs {
		image := r.ImageDigest
		switch {
		case image == "":
			image = r.Spec.Spec.Container.Image
		case r.PinnedBy != "":
			image += " (pinned by node " + cmp.Or(r.PinnedByName, r.PinnedBy) + ")"
		}
		var marks []string
		if r.Number == d.StableRevision {
			marks = append(marks, "stable")
		}
		if r.Number == d.Revision {
			marks = append(marks, "newest")
		}
		t.row(strconv.FormatInt(r.Number, 10), ago(r.CreatedAt, now), orDash(image), orDash(r.Cause),
			orDash(strings.Join(marks, ", ")))
	}
	return t.flush()
}

func newRolloutUndoCommand(e *env) *cobra.Command {
	var to int64
	cmd := &cobra.Command{
		Use:   "undo NAME [--to-revision N]",
		Short: "Roll a deployment back to an older revision",
		Long: `Roll a deployment back: the server makes a new revision, a copy of revision N
(by default the one before the stable revision), and rolls it out like an
apply. Follow it with 'dockfleet rollout status NAME -w'.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to < 0 {
				return usageErrorf("--to-revision must not be negative")
			}
			c, project, err := e.client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			res, err := c.Undo(ctx, project, args[0], to)
			if err != nil {
				return err
			}
			name := cmp.Or(res.Name, args[0])
			if res.Action == api.ActionUnchanged {
				fmt.Fprintf(e.stdout, "deployment/%s unchanged (revision %d)\n", name, res.Revision)
				return nil
			}
			if to == 0 {
				to = undoneTo(ctx, c, project, name, res.Revision)
			}
			s := "deployment/" + name + " rolled back"
			if to > 0 {
				s += fmt.Sprintf(" to revision %d", to)
			}
			s += fmt.Sprintf(" as revision %d", res.Revision)
			if res.Rollout != "" {
				s += " (rollout " + res.Rollout + ")"
			}
			fmt.Fprintln(e.stdout, s)
			return nil
		},
	}
	cmd.Flags().Int64Var(&to, "to-revision", 0, "revision to roll back to (0: the one before the stable revision)")
	return cmd
}

// undoneTo finds which revision an undo copied, from the cause the server
// gave the new revision ("undo to revision 2"), or 0 when it cannot tell.
// The undo is done by then: a failure here only makes the message shorter.
func undoneTo(ctx context.Context, c *client.Client, project, name string, revision int64) int64 {
	revs, err := c.ListRevisions(ctx, project, name)
	if err != nil {
		return 0
	}
	for _, r := range revs {
		if r.Number != revision {
			continue
		}
		if n, ok := strings.CutPrefix(r.Cause, "undo to revision "); ok {
			if to, err := strconv.ParseInt(n, 10, 64); err == nil {
				return to
			}
		}
	}
	return 0
}

// newRolloutActionCommand makes the command of one rollout action: pause,
// resume, abort or promote.
func newRolloutActionCommand(e *env, action, done, short string) *cobra.Command {
	return &cobra.Command{
		Use:   action + " NAME",
		Short: short,
		Args:  usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, project, err := e.client(cmd)
			if err != nil {
				return err
			}
			ro, err := c.RolloutAction(cmd.Context(), project, args[0], action)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "rollout %s %s\n", ro.ID, done)
			return nil
		},
	}
}
