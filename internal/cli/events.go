package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
)

// eventsWait is how long one long poll of events -f waits for an event.
const eventsWait = 30 * time.Second

func newEventsCommand(e *env) *cobra.Command {
	var (
		deployment string
		follow     bool
	)
	cmd := &cobra.Command{
		Use:   "events [--deployment NAME] [-f]",
		Short: "List what happened to a project's deployments, or follow it with -f",
		Long: `List the events of a project's deployments, oldest first: every step of
every rollout, and what happened to instances. With -f it then waits for new
events and prints them as they come, until interrupted.`,
		Example: `  dockfleet events --deployment web -f`,
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, project, err := e.client(cmd)
			if err != nil {
				return err
			}
			return e.events(cmd.Context(), c, project, deployment, follow)
		},
	}
	cmd.Flags().StringVar(&deployment, "deployment", "", "only this deployment's events")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "wait for new events and print them, until interrupted")
	e.addConnFlags(cmd.Flags(), true)
	return cmd
}

// events prints the events there are, a page after another, and with follow
// goes on with long polls. An interrupt ends a follow without an error;
// once the first page came, a server that cannot be reached or fails is
// asked again.
func (e *env) events(ctx context.Context, c *client.Client, project, deployment string, follow bool) error {
	t := &lineTable{w: e.stdout, headers: []string{"TIME", "DEPLOYMENT", "TYPE", "MESSAGE"}}
	var (
		after   int64
		wait    time.Duration // 0 until the events there were are all read
		pending []api.Event   // read but held back until then, to align them
		ok      bool          // an answer came
		failing string        // the error retried, said once
	)
	for {
		evs, err := c.ListEvents(ctx, project, deployment, after, wait)
		switch {
		case err == nil:
		case follow && ctx.Err() != nil:
			return nil
		case follow && ok && transient(err):
			if err.Error() != failing {
				failing = err.Error()
				fmt.Fprintf(e.stderr, "warning: %v; retrying\n", err)
			}
			if sleep(ctx, e.pollInterval()) != nil {
				return nil
			}
			continue
		default:
			return err
		}
		ok, failing = true, ""
		// Guard against a server that does not honour after: never print an
		// event twice, nor ask for the same page forever.
		n := 0
		for _, ev := range evs {
			if ev.Seq > after {
				evs[n] = ev
				n++
				after = ev.Seq
			}
		}
		evs = evs[:n]
		if wait == 0 && len(evs) > 0 {
			pending = append(pending, evs...)
			continue
		}
		if wait == 0 {
			evs = pending
		}
		if err := t.write(eventRows(evs)); err != nil {
			return err
		}
		if !follow {
			return nil
		}
		if wait == 0 {
			wait = eventsWait
			continue
		}
		if len(evs) == 0 {
			// The wait ran out, or a server ignored it: do not poll in a
			// loop.
			if sleep(ctx, e.pollInterval()) != nil {
				return nil
			}
		}
	}
}

func eventRows(evs []api.Event) [][]string {
	rows := make([][]string, 0, len(evs))
	for _, ev := range evs {
		rows = append(rows, []string{ev.Time.Format(time.RFC3339), orDash(ev.Deployment), ev.Type, ev.Message})
	}
	return rows
}

// lineTable writes rows aligned as table does, a batch at a time, for a list
// that grows while it is followed: a column widens for later rows that need
// it, and the rows written before stay as they were.
type lineTable struct {
	w       io.Writer
	headers []string
	widths  []int
	started bool
}

// write writes rows, after the headers the first time.
func (t *lineTable) write(rows [][]string) error {
	if !t.started {
		rows = append([][]string{t.headers}, rows...)
		t.widths = make([]int, len(t.headers))
		t.started = true
	}
	for _, r := range rows {
		for i, c := range r {
			r[i] = cell(c)
			if i < len(r)-1 {
				t.widths[i] = max(t.widths[i], utf8.RuneCountInString(r[i]))
			}
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", t.widths[i]-utf8.RuneCountInString(c)+3))
			}
		}
		b.WriteByte('\n')
	}
	if _, err := io.WriteString(t.w, b.String()); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}
