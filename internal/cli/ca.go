package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
)

func newCACommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Show the fleet's CA and rotate it while the agents stay connected",
		Long: `The fleet's certificate authority signs the server's certificates and every
node's. 'dockfleet ca status' shows its roots and which nodes hold
certificates of which. A rotation replaces the root in two steps, with no
agent disconnected and no container touched:

  dockfleet ca rotate    a new root signs node certificates from now on; the
                         agents learn it over their streams and renew
  dockfleet ca status    wait until no node is pending; meanwhile copy the
                         new CA bundle to the hosts that run the CLI
                         (dockfleet ca bundle > ca.crt)
  dockfleet ca finish    the old root is trusted no more; the servers
                         present certificates of the new one

See docs/operations.md, "Rotating the CA".`,
	}
	makeGroup(cmd)
	e.addConnFlags(cmd.PersistentFlags(), false) // the CA belongs to no project
	cmd.AddCommand(newCAStatusCommand(e), newCARotateCommand(e), newCAFinishCommand(e), newCABundleCommand(e))
	return cmd
}

func newCAStatusCommand(e *env) *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the CA's roots, and the nodes still to renew during a rotation",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			st, err := c.CA(cmd.Context())
			if err != nil {
				return err
			}
			return render(e.stdout, out, st, func() error { return writeCA(e.stdout, st) })
		},
	}
	addOutputFlag(cmd.Flags(), &out)
	return cmd
}

func newCARotateCommand(e *env) *cobra.Command {
	var out outputFormat
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Start a CA rotation: a new root, to which every node moves",
		Long: `Start a CA rotation. A new root signs node certificates from now on; the
old one stays trusted, and still issues the servers' certificates, until
'dockfleet ca finish'. Every connected agent is told at once and renews its
certificate within minutes (spread over time on a large fleet), without
leaving its stream. An agent that is offline now renews when it is back.

Enrollment tokens keep working: those made from now until the rotation
finishes carry the old root's fingerprint too, as the servers still present
its certificates. Every token made before the finish is refused after it.

Agents before protocol version 4 (dockfleet before 2026-12-07) cannot move
to the new root: upgrade them first, or the rotation cannot finish.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			st, err := c.RotateCA(cmd.Context())
			if err != nil {
				return err
			}
			return render(e.stdout, out, st, func() error {
				fmt.Fprintf(e.stdout, "CA rotation started: the new root %s signs node certificates from now on.\n\n", st.Roots[0].Fingerprint)
				return writeCA(e.stdout, st)
			})
		},
	}
	addOutputFlag(cmd.Flags(), &out)
	return cmd
}

func newCAFinishCommand(e *env) *cobra.Command {
	var (
		out   outputFormat
		force bool
	)
	cmd := &cobra.Command{
		Use:   "finish [--force]",
		Short: "End a CA rotation: the old root is trusted no more",
		Long: `End a CA rotation: the old root is retired. The servers present
certificates of the new root from now on and accept no certificate of the
old one: a CLI whose --ca-cert holds only the old root no longer trusts
them, and enrollment tokens made before now are refused. Connected agents
stay connected.

It is refused while a node (not revoked) still holds a certificate of the
old root, as 'dockfleet ca status' lists them: such a node could not
connect afterwards. --force finishes anyway and cuts those nodes off; each
must then enroll again with a token made for it (dockfleet token create
--node NAME). Remove the nodes that are gone for good instead
(dockfleet node rm).`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			st, err := c.FinishCA(cmd.Context(), force)
			if err != nil {
				return err
			}
			return render(e.stdout, out, st, func() error {
				fmt.Fprintf(e.stdout, "CA rotation finished: %s is the only root trusted.\n\n", st.Roots[0].Fingerprint)
				return writeCA(e.stdout, st)
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "finish even while nodes hold certificates of the old root, cutting them off")
	addOutputFlag(cmd.Flags(), &out)
	return cmd
}

func newCABundleCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "bundle",
		Short: "Print the trusted CA roots in PEM, for the CLI's --ca-cert",
		Long: `Print the CA roots the servers trust, in PEM, the active root first: what the
CLI's --ca-cert file (and DOCKFLEET_CACERT) should hold. During a rotation
it holds both roots, and works before and after the finish.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := e.client(cmd)
			if err != nil {
				return err
			}
			st, err := c.CA(cmd.Context())
			if err != nil {
				return err
			}
			if _, err := io.WriteString(e.stdout, st.Bundle); err != nil {
				return fmt.Errorf("writing output: %w", err)
			}
			return nil
		},
	}
}

// writeCA writes the CA's roots as a table, then where a rotation stands.
func writeCA(w io.Writer, st api.CA) error {
	t := newTable(w, "ROOT (SHA-256)", "STATE", "SERVING", "EXPIRES", "NODES")
	for _, r := range st.Roots {
		serving := "-"
		if r.Serving {
			serving = "yes"
		}
		nodes := strconv.Itoa(r.Nodes)
		if r.State == "retired" {
			nodes = "-"
		}
		t.row(r.Fingerprint, r.State, serving, r.NotAfter.UTC().Format(time.DateOnly), nodes)
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	pending := ""
	if st.Pending > 0 {
		pending = strings.Join(st.PendingNodes, ", ")
		if st.Pending > len(st.PendingNodes) {
			pending += fmt.Sprintf(" and %d more", st.Pending-len(st.PendingNodes))
		}
	}
	switch {
	case st.Rotating && st.Pending > 0:
		fmt.Fprintf(w, "Rotation in progress: %d of %d nodes still hold certificates of the old root: %s.\n", st.Pending, st.Nodes, pending)
		fmt.Fprintln(w, "Connected agents renew theirs within minutes; the others when they are back.")
		fmt.Fprintln(w, "Before finishing, give the hosts that run the CLI the new roots: dockfleet ca bundle > ca.crt")
	case st.Rotating:
		fmt.Fprintf(w, "Rotation in progress: all %d nodes hold certificates of the new root.\n", st.Nodes)
		fmt.Fprintln(w, "Give the hosts that run the CLI the new roots (dockfleet ca bundle > ca.crt), then: dockfleet ca finish")
	case st.Pending > 0:
		fmt.Fprintf(w, "No rotation in progress. %d of %d nodes hold certificates of an older or unrecorded root: %s.\n", st.Pending, st.Nodes, pending)
	default:
		fmt.Fprintf(w, "No rotation in progress; all %d nodes hold certificates of the active root.\n", st.Nodes)
	}
	fmt.Fprintf(w, "New enrollment tokens carry the CA fingerprint %s.\n", st.TokenFingerprint)
	return nil
}
