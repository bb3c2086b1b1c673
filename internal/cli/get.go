package cli

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/spec"
)

// kind is a type of object the get, describe and delete commands name.
type kind string

const (
	kindDeployment kind = "deployment"
	kindInstance   kind = "instance"
	kindNode       kind = "node"
)

// kindNames are the names a user may give each kind, as kubectl takes
// singular, plural and short forms.
var kindNames = map[string]kind{
	"deployment": kindDeployment, "deployments": kindDeployment, "deploy": kindDeployment,
	"instance": kindInstance, "instances": kindInstance, "inst": kindInstance,
	"node": kindNode, "nodes": kindNode, "no": kindNode,
}

// parseKind reads a kind among allowed; anything else is a usage error.
func parseKind(s string, allowed ...kind) (kind, error) {
	k, ok := kindNames[strings.ToLower(s)]
	if ok && slices.Contains(allowed, k) {
		return k, nil
	}
	var names []string
	for _, a := range allowed {
		names = append(names, string(a))
	}
	return "", usageErrorf("unknown object type %q; want %s", s, strings.Join(names, ", "))
}

func newGetCommand(e *env) *cobra.Command {
	var (
		out        outputFormat
		deployment string
	)
	cmd := &cobra.Command{
		Use:   "get deployments|instances|nodes [NAME]",
		Short: "List deployments, instances or nodes, or show one",
		Long: `List deployments, instances or nodes, or show one by name (an instance by
its ID). -o json and -o yaml print the API's objects, for scripts.`,
		Example: `  dockfleet get deployments
  dockfleet get instances --deployment hello
  dockfleet get deployment hello -o yaml`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case len(args) == 0:
				return usageErrorf("say what to get: deployments, instances or nodes")
			case len(args) > 2:
				return usageErrorf("want a type and at most one name; got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := parseKind(args[0], kindDeployment, kindInstance, kindNode)
			if err != nil {
				return err
			}
			if deployment != "" && k != kindInstance {
				return usageErrorf("--deployment applies to instances only")
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			c, project, err := e.client(cmd)
			if err != nil {
				return err
			}
			g := getter{e: e, c: c, project: project, out: out, cmd: cmd}
			switch k {
			case kindDeployment:
				return g.deployments(name)
			case kindInstance:
				return g.instances(name, deployment)
			}
			return g.nodes(name)
		},
	}
	addOutputFlag(cmd.Flags(), &out)
	cmd.Flags().StringVar(&deployment, "deployment", "", "list only this deployment's instances")
	e.addConnFlags(cmd.Flags(), true)
	return cmd
}

// getter runs one get.
type getter struct {
	e       *env
	c       *client.Client
	cmd     *cobra.Command
	project string
	out     outputFormat
}

func (g getter) deployments(name string) error {
	ctx := g.cmd.Context()
	if name != "" {
		st, err := g.c.GetDeployment(ctx, g.project, name)
		if err != nil {
			return err
		}
		return render(g.e.stdout, g.out, st.Deployment, func() error {
			return writeDeploymentTable(g.e.stdout, []api.Deployment{st.Deployment}, st.Instances, g.e.now())
		})
	}
	deps, err := g.c.ListDeployments(ctx, g.project)
	if err != nil {
		return err
	}
	if g.out != outputTable {
		return render(g.e.stdout, g.out, deps, nil)
	}
	insts, err := g.c.ListInstances(ctx, g.project, "")
	if err != nil {
		return err
	}
	return writeDeploymentTable(g.e.stdout, deps, insts, g.e.now())
}

func writeDeploymentTable(w io.Writer, deps []api.Deployment, insts []api.Instance, now time.Time) error {
	deps = slices.Clone(deps)
	slices.SortFunc(deps, func(a, b api.Deployment) int { return cmp.Compare(a.Name, b.Name) })
	t := newTable(w, "NAME", "MODE", "REPLICAS", "IMAGE", "REVISION", "AGE")
	for _, d := range deps {
		var mine []api.Instance
		for _, in := range insts {
			if in.Deployment == d.Name {
				mine = append(mine, in)
			}
		}
		t.row(d.Name, string(d.Spec.Spec.Mode), replicas(d, mine), d.Spec.Spec.Container.Image,
			strconv.FormatInt(d.Revision, 10), since(d.CreatedAt, now))
	}
	return t.flush()
}

// replicas writes how many of a deployment's instances run of how many it
// wants, "2/3": the running or healthy ones of the replica count, or in global
// mode of the instances placed (one per matching node).
func replicas(d api.Deployment, insts []api.Instance) string {
	up := 0
	for _, in := range insts {
		if in.State == api.InstanceRunning || in.State == api.InstanceHealthy {
			up++
		}
	}
	want := len(insts)
	if d.Spec.Spec.Mode == spec.ModeReplicated {
		want = d.Spec.Spec.Replicas
	}
	return fmt.Sprintf("%d/%d", up, want)
}

func (g getter) instances(id, deployment string) error {
	insts, err := g.c.ListInstances(g.cmd.Context(), g.project, deployment)
	if err != nil {
		return err
	}
	if id != "" {
		in, err := findInstance(insts, id, g.project)
		if err != nil {
			return err
		}
		return render(g.e.stdout, g.out, in, func() error {
			return writeInstanceTable(g.e.stdout, []api.Instance{in}, g.e.now())
		})
	}
	return render(g.e.stdout, g.out, insts, func() error {
		return writeInstanceTable(g.e.stdout, insts, g.e.now())
	})
}

// findInstance finds an instance by its ID or a unique prefix of it, as
// there is no endpoint for one instance.
func findInstance(insts []api.Instance, id, project string) (api.Instance, error) {
	var found []api.Instance
	for _, in := range insts {
		if in.ID == id {
			return in, nil
		}
		if strings.HasPrefix(in.ID, id) {
			found = append(found, in)
		}
	}
	switch len(found) {
	case 0:
		return api.Instance{}, fmt.Errorf("instance %q not found in project %q", id, project)
	case 1:
		return found[0], nil
	}
	return api.Instance{}, fmt.Errorf("%q is the start of %d instance IDs; give more of it", id, len(found))
}

func writeInstanceTable(w io.Writer, insts []api.Instance, now time.Time) error {
	insts = slices.Clone(insts)
	slices.SortFunc(insts, func(a, b api.Instance) int {
		return cmp.Or(cmp.Compare(a.Deployment, b.Deployment), cmp.Compare(nodeName(a), nodeName(b)), cmp.Compare(a.ID, b.ID))
	})
	// REASON goes last: it is free text of any length.
	t := newTable(w, "ID", "DEPLOYMENT", "NODE", "REVISION", "STATE", "AGE", "UPDATED", "REASON")
	for _, in := range insts {
		t.row(in.ID, in.Deployment, nodeName(in), strconv.FormatInt(in.Revision, 10), string(in.State),
			since(in.CreatedAt, now), ago(in.UpdatedAt, now), orDash(in.Reason))
	}
	return t.flush()
}

// nodeName is the name of an instance's node, or its ID when the API gave
// no name.
func nodeName(in api.Instance) string {
	return cmp.Or(in.NodeName, in.NodeID)
}

func (g getter) nodes(name string) error {
	ctx := g.cmd.Context()
	if name != "" {
		n, err := g.c.GetNode(ctx, name)
		if err != nil {
			return err
		}
		return render(g.e.stdout, g.out, n, func() error {
			return writeNodeTable(g.e.stdout, []api.Node{n}, g.e.now())
		})
	}
	nodes, err := g.c.ListNodes(ctx)
	if err != nil {
		return err
	}
	return render(g.e.stdout, g.out, nodes, func() error {
		return writeNodeTable(g.e.stdout, nodes, g.e.now())
	})
}
