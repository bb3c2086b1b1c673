package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
)

// stdinName is the file name apply sends for a spec read from stdin.
const stdinName = "<stdin>"

func newApplyCommand(e *env) *cobra.Command {
	var (
		file    string
		wait    bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|- [--wait [--timeout D]]",
		Short: "Create or update the deployments of a spec file",
		Long: `Create or update the deployments of a spec file (YAML or JSON, one or more
documents); - reads it from stdin. The server checks every document first: if
any is invalid it lists every problem, one "FILE:LINE: field: problem" per
line, and changes nothing.

With --project (or DOCKFLEET_PROJECT) the documents that name no project go
to that one, and one that names another is refused.

A change rolls out in batches after apply returns. With --wait, apply follows
each rollout it started, one after another, as 'rollout status -w' does, and
exits 1 unless every one succeeded.`,
		Example: `  dockfleet apply -f examples/hello/deployment.yaml
  dockfleet apply -f web.yaml --wait --timeout 10m`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageErrorf("-f FILE is required (- for stdin)")
			}
			if timeout < 0 {
				return usageErrorf("--timeout must not be negative")
			}
			if timeout > 0 && !wait {
				return usageErrorf("--timeout applies with --wait only")
			}
			name, body, err := readSpec(file, e.stdin)
			if err != nil {
				return err
			}
			c, project, err := e.client(cmd)
			if err != nil {
				return err
			}
			// Only a project asked for is sent: a spec names its own
			// otherwise, and the server puts one naming none in default.
			if !cmd.Flags().Changed("project") && e.getenv(envProject) == "" {
				project = ""
			}
			resp, err := c.Apply(cmd.Context(), name, project, body)
			if err != nil {
				return err
			}
			for _, r := range resp.Results {
				fmt.Fprintln(e.stdout, applyLine(r))
				for _, w := range r.Warnings {
					fmt.Fprintf(e.stderr, "warning: deployment/%s: %s\n", r.Name, w)
				}
			}
			if !wait {
				return nil
			}
			ctx, cancel := withWaitTimeout(cmd.Context(), timeout)
			defer cancel()
			return e.waitForRollouts(ctx, c, resp.Results)
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "spec file to apply, - for stdin")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the rollouts the apply started until they end; exit 1 unless all succeed")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait, give up waiting after this long and exit 1 (0: no limit)")
	e.addConnFlags(cmd.Flags(), true)
	return cmd
}

// waitForRollouts follows the rollout of every result that started one, one
// after another, and fails if any did not succeed. It stops at the first
// that ctx cuts short.
func (e *env) waitForRollouts(ctx context.Context, c *client.Client, results []api.ApplyResult) error {
	var errs []error
	for _, r := range results {
		if r.Rollout == "" {
			continue
		}
		_, err := e.followRollout(ctx, c, cmp.Or(r.Project, api.DefaultProject), r.Name, r.Rollout)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

func readSpec(file string, stdin io.Reader) (name string, body []byte, err error) {
	if file == "-" {
		body, err = io.ReadAll(stdin)
		if err != nil {
			return "", nil, fmt.Errorf("reading stdin: %w", err)
		}
		return stdinName, body, nil
	}
	body, err = os.ReadFile(file)
	if err != nil {
		return "", nil, fmt.Errorf("reading spec: %w", err)
	}
	return file, body, nil
}

// applyLine says what apply did to one deployment:
// "deployment/hello configured (revision 2)".
func applyLine(r api.ApplyResult) string {
	s := "deployment/" + r.Name + " " + r.Action
	var notes []string
	if r.Project != "" && r.Project != api.DefaultProject {
		notes = append(notes, "project "+r.Project)
	}
	if r.Action != api.ActionUnchanged {
		notes = append(notes, fmt.Sprintf("revision %d", r.Revision))
	}
	for i, n := range notes {
		if i == 0 {
			s += " (" + n
		} else {
			s += ", " + n
		}
	}
	if len(notes) > 0 {
		s += ")"
	}
	return s
}
