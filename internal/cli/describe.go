package cli

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/registry"
	"github.com/dockfleet/dockfleet/internal/spec"
)

func newDescribeCommand(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe deployment|node NAME",
		Short: "Show a deployment with its instances, or a node, in detail",
		Args:  usageArgs(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := parseKind(args[0], kindDeployment, kindNode)
			if err != nil {
				return err
			}
			c, project, err := e.client(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if k == kindDeployment {
				st, err := c.GetDeployment(ctx, project, args[1])
				if err != nil {
					return err
				}
				var ro *api.Rollout
				switch r, err := c.GetRollout(ctx, project, args[1]); {
				case err == nil:
					ro = &r
				case !client.IsNotFound(err): // 404: there never was a rollout
					return err
				}
				return describeDeployment(e.stdout, st, ro, e.now())
			}
			n, err := c.GetNode(ctx, args[1])
			if err != nil {
				return err
			}
			insts, err := c.ListInstances(ctx, project, "")
			if err != nil {
				return err
			}
			var mine []api.Instance
			for _, in := range insts {
				if in.NodeID == n.ID {
					mine = append(mine, in)
				}
			}
			return describeNode(e.stdout, n, project, mine, e.now())
		},
	}
	e.addConnFlags(cmd.Flags(), true)
	return cmd
}

// fields writes "Name:  value" lines with the values aligned.
type fields struct{ tw *tabwriter.Writer }

func newFields(w io.Writer) fields {
	return fields{tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
}

func (f fields) add(name, value string) { fmt.Fprintf(f.tw, "%s:\t%s\n", name, cell(value)) }

func (f fields) flush() error {
	if err := f.tw.Flush(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// describeDeployment writes a deployment, its newest rollout unless ro is
// nil, and its instances.
func describeDeployment(w io.Writer, st api.DeploymentStatus, ro *api.Rollout, now time.Time) error {
	d := st.Deployment
	s := d.Spec.Spec
	f := newFields(w)
	f.add("Name", d.Name)
	f.add("Project", d.Project)
	f.add("Revision", strconv.FormatInt(d.Revision, 10))
	stable := "none yet"
	if d.StableRevision > 0 {
		stable = strconv.FormatInt(d.StableRevision, 10)
	}
	f.add("Stable revision", stable)
	if ro != nil {
		f.add("Rollout", ro.ID+" "+rolloutSummary(*ro))
		if ro.Message != "" {
			f.add("Rollout message", ro.Message)
		}
	}
	f.add("Mode", string(s.Mode))
	f.add("Replicas", replicas(d, st.Instances)+" running")
	f.add("Selector", formatSelector(s.Selector))
	f.add("Image", s.Container.Image)
	f.add("Pinned image", pinnedImage(s, st.ImageDigest, st.PinnedBy, st.PinnedByName))
	f.add("Health check", formatHealthCheck(s.Container.HealthCheck))
	f.add("Created", timestamp(d.CreatedAt, now))
	f.add("Updated", timestamp(d.UpdatedAt, now))
	if err := f.flush(); err != nil {
		return err
	}
	return writeInstanceDetails(w, "Instances", st.Instances, false)
}

// pinnedImage says what a revision's image is pinned to and by whom, the
// value as stored whatever its form, and whether the server ignores it.
func pinnedImage(s spec.DeploymentSpec, pinned, byID, byName string) string {
	switch {
	case pinned == "" && s.ImagePolicy == spec.ImagePolicyUnpinned:
		return "none (imagePolicy unpinned: each node runs the tag as its Docker has it)"
	case pinned == "":
		return "none yet"
	}
	out := pinned
	if byID != "" {
		out += fmt.Sprintf(" (pinned by node %s, ID %s)", cmp.Or(byName, "?"), byID)
	}
	if _, err := registry.Pin(s.Container.Image, pinned); err != nil {
		out += " (ignored: not a digest of the image's repository)"
	}
	return out
}

// writeInstanceDetails lists instances under a heading, with their node or
// their deployment.
func writeInstanceDetails(w io.Writer, heading string, insts []api.Instance, byNode bool) error {
	if len(insts) == 0 {
		_, err := fmt.Fprintf(w, "\n%s: none\n", heading)
		return err
	}
	fmt.Fprintf(w, "\n%s:\n", heading)
	second := "NODE"
	if byNode {
		second = "DEPLOYMENT"
	}
	t := newTable(&indent{w: w, prefix: "  "}, "ID", second, "REVISION", "STATE", "HEALTH", "RESTARTS", "CONTAINER", "DIGEST", "LAST ERROR")
	for _, in := range insts {
		col := nodeName(in)
		if byNode {
			col = in.Deployment
		}
		t.row(in.ID, col, strconv.FormatInt(in.Revision, 10), string(in.State), health(in.State), strconv.Itoa(in.Restarts), shortID(in.ContainerID),
			shortDigest(in.ImageDigest), orDash(in.Reason))
	}
	return t.flush()
}

// shortDigest cuts repo@sha256:<64 hex> to sha256:<12 hex>, enough to tell
// digests apart at a glance; "-" when unknown. Anything else is shown as
// it is, not hidden.
func shortDigest(d string) string {
	if d == "" {
		return "-"
	}
	i := strings.LastIndex(d, "sha256:")
	if i < 0 || (i > 0 && d[i-1] != '@') {
		return d
	}
	hex := d[i+len("sha256:"):]
	return "sha256:" + hex[:min(12, len(hex))]
}

// health is what an instance's state says of its health: a verdict of its
// health check, a failure, or "-" while it has none.
func health(s api.InstanceState) string {
	switch s {
	case api.InstanceHealthy:
		return "healthy"
	case api.InstanceUnhealthy, api.InstanceFailed:
		return "unhealthy"
	}
	return "-"
}

// formatSelector writes a selector as Kubernetes does:
// "role=web,zone in (a,b),!canary", or "<all nodes>".
func formatSelector(s spec.Selector) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		parts = append(parts, k+"="+s.MatchLabels[k])
	}
	for _, r := range s.MatchExpressions {
		switch r.Operator {
		case spec.OpIn:
			parts = append(parts, r.Key+" in ("+strings.Join(r.Values, ",")+")")
		case spec.OpNotIn:
			parts = append(parts, r.Key+" notin ("+strings.Join(r.Values, ",")+")")
		case spec.OpExists:
			parts = append(parts, r.Key)
		case spec.OpDoesNotExist:
			parts = append(parts, "!"+r.Key)
		default:
			parts = append(parts, fmt.Sprintf("%s %s (%s)", r.Key, r.Operator, strings.Join(r.Values, ",")))
		}
	}
	if len(parts) == 0 {
		return "<all nodes>"
	}
	return strings.Join(parts, ",")
}

func formatHealthCheck(h *spec.HealthCheck) string {
	if h == nil {
		return "none"
	}
	var probe string
	switch {
	case h.HTTP != nil:
		probe = fmt.Sprintf("http GET :%d%s", h.HTTP.Port, h.HTTP.Path)
	case h.TCP != nil:
		probe = fmt.Sprintf("tcp :%d", h.TCP.Port)
	case h.Exec != nil:
		probe = "exec " + strings.Join(h.Exec.Command, " ")
	default:
		probe = "?"
	}
	if h.Interval > 0 {
		probe += " every " + h.Interval.String()
	}
	return probe
}

func describeNode(w io.Writer, n api.Node, project string, insts []api.Instance, now time.Time) error {
	f := newFields(w)
	f.add("Name", n.Name)
	f.add("ID", n.ID)
	f.add("State", string(n.State))
	if n.Scheduling != "" {
		f.add("Scheduling", schedulingNote(n.Scheduling))
	}
	if n.Error != "" {
		f.add("Error", n.Error)
	}
	f.add("Labels", formatLabels(n.Labels))
	f.add("Last seen", timestamp(n.LastSeen, now))
	f.add("Enrolled", timestamp(n.CreatedAt, now))
	if n.Epoch > 0 {
		f.add("Re-enrolled", strconv.FormatInt(n.Epoch, 10)+" time(s); older certificates are refused")
	}
	f.add("Hostname", orDash(n.Facts.Hostname))
	f.add("Platform", orDash(strings.Trim(n.Facts.OS+"/"+n.Facts.Arch, "/")))
	f.add("Agent", orDash(n.Facts.AgentVersion))
	f.add("Docker", orDash(n.Facts.DockerVersion))
	f.add("CPU", nodeCPU(n))
	f.add("Memory", nodeMemory(n))
	f.add("Containers", strconv.Itoa(n.Usage.Containers))
	if err := f.flush(); err != nil {
		return err
	}
	return writeInstanceDetails(w, fmt.Sprintf("Instances in project %s", project), insts, true)
}

// indent prefixes every line written through it.
type indent struct {
	w       io.Writer
	prefix  string
	midLine bool
}

func (in *indent) Write(p []byte) (int, error) {
	var b []byte
	for _, c := range p {
		if !in.midLine {
			b = append(b, in.prefix...)
		}
		b = append(b, c)
		in.midLine = c != '\n'
	}
	if _, err := in.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}
