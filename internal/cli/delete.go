package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newDeleteCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete deployment NAME",
		Short: "Delete a deployment; its containers are removed from every node",
		Args:  usageArgs(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := parseKind(args[0], kindDeployment); err != nil {
				return err
			}
			c, project, err := e.client(cmd)
			if err != nil {
				return err
			}
			if err := c.DeleteDeployment(cmd.Context(), project, args[1]); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deployment/%s deleted\n", args[1])
			return nil
		},
	}
	e.addConnFlags(cmd.Flags(), true)
	return cmd
}
