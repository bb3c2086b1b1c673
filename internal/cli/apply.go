package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
)

// stdinName is the file name apply sends for a spec read from stdin.
const stdinName = "<stdin>"

func newApplyCommand(e *env) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE|-",
		Short: "Create or update the deployments of a spec file",
		Long: `Create or update the deployments of a spec file (YAML or JSON, one or more
documents); - reads it from stdin. The server checks every document first: if
any is invalid it lists every problem, one "FILE:LINE: field: problem" per
line, and changes nothing.`,
		Example: "  dockfleet apply -f examples/hello/deployment.yaml",
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageErrorf("-f FILE is required (- for stdin)")
			}
			name, body, err := readSpec(file, e.stdin)
			if err != nil {
				return err
			}
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			resp, err := c.Apply(cmd.Context(), name, body)
			if err != nil {
				return err
			}
			for _, r := range resp.Results {
				fmt.Fprintln(e.stdout, applyLine(r))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "spec file to apply, - for stdin")
	e.addConnFlags(cmd.Flags(), false) // a spec names its own project
	return cmd
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
