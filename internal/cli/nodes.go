package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/spec"
)

func newNodesCommand(e *env) *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the enrolled nodes",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			nodes, err := c.ListNodes(cmd.Context())
			if err != nil {
				return err
			}
			return render(e.stdout, out, nodes, func() error {
				return writeNodeTable(e.stdout, nodes, e.now())
			})
		},
	}
	e.addConnFlags(cmd.Flags(), false) // nodes are shared by projects
	addOutputFlag(cmd.Flags(), &out)
	return cmd
}

// writeNodeTable writes nodes as a table, with an ERROR column when any node
// reports a problem.
func writeNodeTable(w io.Writer, nodes []api.Node, now time.Time) error {
	withErr := slices.ContainsFunc(nodes, func(n api.Node) bool { return n.Error != "" })
	headers := []string{"NAME", "ID", "STATE", "LABELS", "LAST SEEN", "CPU", "MEMORY", "CONTAINERS"}
	if withErr {
		headers = append(headers, "ERROR")
	}
	t := newTable(w, headers...)
	for _, n := range nodes {
		state := string(n.State)
		if n.Scheduling != "" {
			state += "," + string(n.Scheduling)
		}
		row := []string{n.Name, n.ID, state, formatLabels(n.Labels), ago(n.LastSeen, now),
			nodeCPU(n), nodeMemory(n), strconv.Itoa(n.Usage.Containers)}
		if withErr {
			row = append(row, orDash(n.Error))
		}
		t.row(row...)
	}
	return t.flush()
}

// nodeCPU writes a node's CPU use and count, "12.5% of 4", or "-" before
// its agent reported any.
func nodeCPU(n api.Node) string {
	if n.Facts.CPUs == 0 && n.Usage.CPUPercent == 0 {
		return "-"
	}
	s := strconv.FormatFloat(n.Usage.CPUPercent, 'f', 1, 64) + "%"
	if n.Facts.CPUs > 0 {
		s += " of " + strconv.Itoa(n.Facts.CPUs)
	}
	return s
}

// nodeMemory writes a node's memory use and size, "512Mi/7.7Gi", or "-"
// before its agent reported any.
func nodeMemory(n api.Node) string {
	if n.Facts.MemoryBytes == 0 && n.Usage.MemoryBytes == 0 {
		return "-"
	}
	s := formatBytes(n.Usage.MemoryBytes)
	if n.Facts.MemoryBytes > 0 {
		s += "/" + formatBytes(n.Facts.MemoryBytes)
	}
	return s
}

func newNodeCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Change a node",
	}
	makeGroup(cmd)
	e.addConnFlags(cmd.PersistentFlags(), false)
	cmd.AddCommand(newNodeLabelCommand(e), newNodeRevokeCommand(e), newNodeRemoveCommand(e),
		newNodeCordonCommand(e), newNodeDrainCommand(e), newNodeUncordonCommand(e))
	return cmd
}

// schedulingNote says what a node's scheduling means, for describe node.
func schedulingNote(s api.NodeScheduling) string {
	switch s {
	case api.NodeCordoned:
		return "cordoned: takes no new instances; dockfleet node uncordon brings it back"
	case api.NodeDraining:
		return "draining: takes no new instances; its instances are moving to other nodes"
	case api.NodeDrained:
		return "drained: runs nothing and takes no new instances; dockfleet node uncordon brings it back"
	}
	return string(s)
}

func newNodeCordonCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "cordon NODE",
		Short: "Place no new instances on a node; what it runs stays",
		Long: `Cordon a node: placement puts no new instances on it, and what it runs stays
there. A draining node stays draining. dockfleet node uncordon brings it back.
NODE is the node's name or ID.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			n, err := c.CordonNode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "node/%s %s\n", n.Name, cmp.Or(n.Scheduling, "cordoned"))
			return nil
		},
	}
}

// drainPoll is how often node drain --wait asks how the drain goes.
const drainPoll = time.Second

func newNodeDrainCommand(e *env) *cobra.Command {
	var (
		wait    bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "drain NODE [--wait [--timeout D]]",
		Short: "Move a node's instances to other nodes and place nothing new on it",
		Long: `Drain a node before maintenance: it takes no new instances, each of its
replicated instances moves to another node (the replacement starts first, and
the instance on the drained node stops once its replacement is healthy, never
taking a deployment below its replicas less update.maxUnavailable), and then
its global instances stop. dockfleet nodes shows it draining, then drained.
dockfleet node uncordon brings it back. With --wait, drain returns once the
node is drained (exit 0), or exits 1 at the timeout. NODE is the node's name
or ID.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout > 0 && !wait {
				return usageErrorf("--timeout applies with --wait only")
			}
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			n, err := c.DrainNode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "node/%s %s\n", n.Name, n.Scheduling)
			if !wait {
				return nil
			}
			ctx, cancel := withWaitTimeout(cmd.Context(), timeout)
			defer cancel()
			tick := time.NewTicker(drainPoll)
			defer tick.Stop()
			for n.Scheduling == api.NodeDraining {
				select {
				case <-ctx.Done():
					return fmt.Errorf("node %s is still draining: %w", n.Name, context.Cause(ctx))
				case <-tick.C:
				}
				// A poll that fails (server restarting) is tried again.
				if got, err := c.GetNode(ctx, n.ID); err == nil {
					n = got
				}
			}
			if n.Scheduling != api.NodeDrained {
				return fmt.Errorf("node %s is no longer draining (%s): someone uncordoned it", n.Name, cmp.Or(string(n.Scheduling), "schedulable"))
			}
			fmt.Fprintf(e.stdout, "node/%s drained\n", n.Name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the node is drained")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait, give up waiting after this long and exit 1 (0: no limit)")
	return cmd
}

func newNodeUncordonCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:     "uncordon NODE",
		Aliases: []string{"undrain"},
		Short:   "Let a cordoned or drained node take work again",
		Long: `Uncordon a node: placement uses it again, so its global instances return and
replicated ones may be placed on it as they need a node (running ones are not
moved back). This also ends a drain that is under way. NODE is the node's name
or ID.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			n, err := c.UncordonNode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "node/%s uncordoned\n", n.Name)
			return nil
		},
	}
}

func newNodeRevokeCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NODE",
		Short: "Revoke a node's identity: its certificate is refused and its connection closed",
		Long: `Revoke a node's identity at once: the agent endpoint refuses its certificate
from now on and closes its connection, it cannot renew, and its instances are
treated as those of a lost node (replicated ones move to other nodes). The
node stays listed as revoked; remove it with dockfleet node rm. NODE is the
node's name or ID.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			n, err := c.RevokeNode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "node/%s revoked\n", n.Name)
			return nil
		},
	}
}

func newNodeRemoveCommand(e *env) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NODE [--force]",
		Aliases: []string{"remove"},
		Short:   "Remove a node; its certificate is refused from then on",
		Long: `Remove a node: it leaves the node list, its instances are removed (placement
moves replicated ones to other nodes), and its certificate is refused from now
on. A node whose agent is connected is removed only with --force, which also
closes its connection. The host can enroll again as a new node, under the same
name, with a new token. NODE is the node's name or ID.`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			if err := c.DeleteNode(cmd.Context(), args[0], force); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "node/%s removed\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove the node even while its agent is connected")
	return cmd
}

func newNodeLabelCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "label NODE KEY=VALUE... KEY-...",
		Short: "Set and remove a node's labels",
		Long: `Set and remove a node's labels: KEY=VALUE sets a label, KEY- removes one.
NODE is the node's name or ID.`,
		Example: "  dockfleet node label web-1 role=web zone=eu-1 canary-",
		Args:    usageArgs(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			patch, err := parseLabelPatch(args[1:])
			if err != nil {
				return err
			}
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			n, err := c.PatchNodeLabels(cmd.Context(), args[0], patch)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "node/%s labeled: %s\n", n.Name, formatLabels(n.Labels))
			return nil
		},
	}
}

// parseLabelPatch reads kubectl-style label edits: "k=v" sets, "k-" removes.
// Every mistake is a usage error.
func parseLabelPatch(args []string) (api.LabelPatch, error) {
	var p api.LabelPatch
	for _, arg := range args {
		if k, v, ok := strings.Cut(arg, "="); ok {
			if err := spec.ValidateLabelKey(k); err != nil {
				return api.LabelPatch{}, usageErrorf("label %q: key %q %v", arg, k, err)
			}
			if err := spec.ValidateLabelValue(v); err != nil {
				return api.LabelPatch{}, usageErrorf("label %q: value %q %v", arg, v, err)
			}
			if p.Set == nil {
				p.Set = map[string]string{}
			}
			if _, dup := p.Set[k]; dup {
				return api.LabelPatch{}, usageErrorf("label %q is given twice", k)
			}
			p.Set[k] = v
			continue
		}
		k, ok := strings.CutSuffix(arg, "-")
		if !ok {
			return api.LabelPatch{}, usageErrorf("label %q: want KEY=VALUE to set or KEY- to remove", arg)
		}
		if err := spec.ValidateLabelKey(k); err != nil {
			return api.LabelPatch{}, usageErrorf("label %q: key %q %v", arg, k, err)
		}
		if slices.Contains(p.Remove, k) {
			return api.LabelPatch{}, usageErrorf("label %q is given twice", k)
		}
		p.Remove = append(p.Remove, k)
	}
	for _, k := range p.Remove {
		if _, ok := p.Set[k]; ok {
			return api.LabelPatch{}, usageErrorf("label %q is both set and removed", k)
		}
	}
	return p, nil
}
