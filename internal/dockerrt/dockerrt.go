// Package dockerrt is the agent's runtime over Docker Engine's API, through
// Docker's Go SDK (github.com/moby/moby/client). It implements agent.Runtime:
// it lists, creates, starts, removes and execs into the containers labelled
// with one node's ID (container.LabelNode) and refuses to touch any other
// container on the host, whoever asks.
//
// Docker's own restart policy is never set: the agent restarts containers
// itself, with backoff, so that it can report a crash loop.
package dockerrt

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	dcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/container"
)

// Client is a connection to one Docker daemon. It is safe for concurrent use.
type Client struct {
	api  *client.Client
	host string
}

// New connects to the Docker daemon at host ("unix:///var/run/docker.sock",
// "tcp://…"), or, when host is empty, at the one DOCKER_HOST and the other
// DOCKER_* variables name, else the default socket. It does not contact the
// daemon: use Ping to check that it answers.
func New(host string) (*Client, error) {
	opts := []client.Opt{client.FromEnv}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	api, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("configuring docker client: %w", err)
	}
	// The API version is negotiated on the first request, so an agent
	// started before its daemon comes up runs, reports Docker unreachable
	// on its node, and carries on once the daemon answers.
	return &Client{api: api, host: api.DaemonHost()}, nil
}

// Close releases the client's idle connections.
func (c *Client) Close() error {
	return c.api.Close()
}

// Ping checks that the daemon answers; an error means Docker is unreachable.
func (c *Client) Ping(ctx context.Context) error {
	if _, err := c.api.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("pinging docker at %s: %w", c.host, err)
	}
	return nil
}

// Info describes the host as Docker sees it. OS and Arch use Go's names
// ("linux", "amd64"), as image platforms do.
func (c *Client) Info(ctx context.Context) (container.HostInfo, error) {
	v, err := c.api.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return container.HostInfo{}, fmt.Errorf("getting docker version: %w", err)
	}
	info, err := c.api.Info(ctx, client.InfoOptions{})
	if err != nil {
		return container.HostInfo{}, fmt.Errorf("getting docker info: %w", err)
	}
	return container.HostInfo{
		RuntimeVersion: v.Version,
		OS:             v.Os,
		Arch:           v.Arch,
		CPUs:           info.Info.NCPU,
		MemoryBytes:    info.Info.MemTotal,
	}, nil
}

// List returns nodeID's containers in every state, sorted by name.
func (c *Client) List(ctx context.Context, nodeID string) ([]container.State, error) {
	if err := checkNodeID(nodeID); err != nil {
		return nil, fmt.Errorf("listing containers of node %q: %w", nodeID, err)
	}
	res, err := c.api.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", container.LabelNode+"="+nodeID),
	})
	if err != nil {
		return nil, fmt.Errorf("listing containers of node %s: %w", nodeID, err)
	}
	// The list lacks exit codes, times and addresses; inspect gives them.
	states := make([]container.State, 0, len(res.Items))
	for _, s := range res.Items {
		ins, err := c.api.ContainerInspect(ctx, s.ID, client.ContainerInspectOptions{})
		if cerrdefs.IsNotFound(err) {
			continue // removed since the list: it is gone, as the next List says too
		}
		if err != nil {
			return nil, fmt.Errorf("inspecting container %s: %w", s.ID, err)
		}
		// Labels are checked again: the filter ran on the daemon, ownership is ours.
		if st := stateOf(ins.Container); owns(nodeID, st.Labels) {
			states = append(states, st)
		}
	}
	slices.SortFunc(states, func(a, b container.State) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return states, nil
}

// HasImage reports whether the daemon has the image ref.
func (c *Client) HasImage(ctx context.Context, ref string) (bool, error) {
	_, err := c.api.ImageInspect(ctx, ref)
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("inspecting image %s: %w", ref, err)
	}
}

// EnsureImage pulls ref unless the daemon already has it, and returns the
// image's digest in ref's repository as Docker records it in the image's
// RepoDigests ("hello@sha256:…", "127.0.0.1:5000/hello@sha256:…"), or ""
// when there is none: an image built here and never pushed or pulled. It
// is "" too when the image has several digests in that repository (pulled
// both by an index's digest and by one of its manifests'), as nothing says
// which one ref's tag names.
//
// A ref with a digest is pulled by that digest (a tag beside it is
// ignored, as Docker does), and that digest is returned. A failed pull
// returns the registry's message, which the daemon sends inside the
// pull's progress stream rather than as an HTTP error.
func (c *Client) EnsureImage(ctx context.Context, ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("pulling image %s: %w", ref, err)
	}
	local := ref
	if d, ok := named.(reference.Digested); ok {
		pinned, err := reference.WithDigest(reference.TrimNamed(named), d.Digest())
		if err != nil {
			return "", fmt.Errorf("pulling image %s: %w", ref, err)
		}
		local = reference.FamiliarString(pinned)
	}
	ins, err := c.api.ImageInspect(ctx, local)
	if cerrdefs.IsNotFound(err) {
		if err := c.pull(ctx, ref, local); err != nil {
			return "", err
		}
		ins, err = c.api.ImageInspect(ctx, local)
	}
	if err != nil {
		return "", fmt.Errorf("inspecting image %s: %w", ref, err)
	}
	if _, ok := named.(reference.Digested); ok {
		return local, nil
	}
	return repoDigest(named, ins.RepoDigests), nil
}

// pull pulls local, ref in the form the daemon finds it by.
func (c *Client) pull(ctx context.Context, ref, local string) error {
	pull, err := c.api.ImagePull(ctx, local, client.ImagePullOptions{})
	if err != nil {
		return fmt.Errorf("pulling image %s: %w", ref, err)
	}
	defer pull.Close()
	if err := pull.Wait(ctx); err != nil {
		return fmt.Errorf("pulling image %s: %w", ref, err)
	}
	return nil
}

// repoDigest returns the one digest among an image's RepoDigests that is
// in named's repository, in Docker's familiar form; "" for none or several.
func repoDigest(named reference.Named, repoDigests []string) string {
	found := ""
	for _, s := range repoDigests {
		rd, err := reference.ParseNormalizedNamed(s)
		if err != nil {
			continue
		}
		c, ok := rd.(reference.Canonical)
		if !ok || rd.Name() != named.Name() {
			continue
		}
		pinned := reference.FamiliarString(c)
		if found != "" && found != pinned {
			return ""
		}
		found = pinned
	}
	return found
}

// Create creates the container cfg describes without starting it. cfg must
// carry the container.LabelNode label: a container without it could never
// be listed or removed again.
func (c *Client) Create(ctx context.Context, cfg container.Config) (string, error) {
	if cfg.Labels[container.LabelNode] == "" {
		return "", fmt.Errorf("creating container %s: no %s label", cfg.Name, container.LabelNode)
	}
	config, host, err := dockerConfig(cfg)
	if err != nil {
		return "", fmt.Errorf("creating container %s: %w", cfg.Name, err)
	}
	res, err := c.api.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:       cfg.Name,
		Config:     config,
		HostConfig: host,
	})
	if err != nil {
		return "", fmt.Errorf("creating container %s from %s: %w", cfg.Name, cfg.Image, err)
	}
	return res.ID, nil
}

// dockerConfig translates cfg into Docker's create request.
func dockerConfig(cfg container.Config) (*dcontainer.Config, *dcontainer.HostConfig, error) {
	env := make([]string, 0, len(cfg.Env))
	for _, k := range slices.Sorted(maps.Keys(cfg.Env)) {
		env = append(env, k+"="+cfg.Env[k])
	}
	config := &dcontainer.Config{
		Image:      cfg.Image,
		Entrypoint: cfg.Command,
		Cmd:        cfg.Args,
		Env:        env,
		Labels:     maps.Clone(cfg.Labels),
	}
	host := &dcontainer.HostConfig{
		Resources: dcontainer.Resources{
			NanoCPUs: int64(math.Round(cfg.CPUs * 1e9)),
			Memory:   cfg.MemoryBytes,
		},
	}
	for _, p := range cfg.Ports {
		proto := network.TCP
		if p.Protocol != "" {
			proto = network.IPProtocol(p.Protocol)
		}
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return nil, nil, fmt.Errorf("port %d: out of range", p.ContainerPort)
		}
		port, ok := network.PortFrom(uint16(p.ContainerPort), proto)
		if !ok {
			return nil, nil, fmt.Errorf("port %d/%s: invalid", p.ContainerPort, proto)
		}
		if config.ExposedPorts == nil {
			config.ExposedPorts = network.PortSet{}
		}
		config.ExposedPorts[port] = struct{}{}
		if p.HostPort == 0 {
			continue
		}
		var ip netip.Addr
		if p.HostIP != "" {
			var err error
			if ip, err = netip.ParseAddr(p.HostIP); err != nil {
				return nil, nil, fmt.Errorf("port %s: host IP: %w", port, err)
			}
		}
		if host.PortBindings == nil {
			host.PortBindings = network.PortMap{}
		}
		host.PortBindings[port] = append(host.PortBindings[port], network.PortBinding{
			HostIP:   ip,
			HostPort: strconv.Itoa(p.HostPort),
		})
	}
	for _, m := range cfg.Mounts {
		typ := mount.TypeVolume
		if m.Bind {
			typ = mount.TypeBind
		}
		host.Mounts = append(host.Mounts, mount.Mount{
			Type:     typ,
			Source:   m.Source,
			Target:   m.Target,
			ReadOnly: m.ReadOnly,
		})
	}
	return config, host, nil
}

// Start starts nodeID's container id. Starting a running container is not an error.
func (c *Client) Start(ctx context.Context, nodeID, id string) error {
	if _, err := c.owned(ctx, nodeID, id); err != nil {
		return fmt.Errorf("starting container %s: %w", id, err)
	}
	if _, err := c.api.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
		return fmt.Errorf("starting container %s: %w", id, err)
	}
	return nil
}

// Remove kills and removes nodeID's container id with its anonymous
// volumes. Removing a container that no longer exists is not an error.
func (c *Client) Remove(ctx context.Context, nodeID, id string) error {
	if _, err := c.owned(ctx, nodeID, id); err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("removing container %s: %w", id, err)
	}
	_, err := c.api.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("removing container %s: %w", id, err)
	}
	return nil
}

// Exec runs cmd in nodeID's running container id and returns its exit
// code: 126 or 127 when cmd cannot be run. When ctx ends first, Exec
// returns ctx's error; Docker cannot kill an exec, so the process may run
// on until it ends by itself.
func (c *Client) Exec(ctx context.Context, nodeID, id string, cmd []string) (int, error) {
	ins, err := c.owned(ctx, nodeID, id)
	if err != nil {
		return 0, fmt.Errorf("running %q in container %s: %w", cmd, id, err)
	}
	if ins.State == nil || !ins.State.Running {
		return 0, fmt.Errorf("running %q in container %s: container is not running", cmd, id)
	}
	code, err := c.exec(ctx, id, cmd)
	if err != nil {
		return 0, fmt.Errorf("running %q in container %s: %w", cmd, id, err)
	}
	return code, nil
}

func (c *Client) exec(ctx context.Context, id string, cmd []string) (int, error) {
	ex, err := c.api.ExecCreate(ctx, id, client.ExecCreateOptions{
		Cmd:          cmd,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return 0, err
	}
	// Attaching, rather than starting detached, makes the end of the output
	// stream the moment the process exits: no polling while it runs.
	att, err := c.api.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return 0, err
	}
	stop := context.AfterFunc(ctx, att.Close)
	_, copyErr := io.Copy(io.Discard, att.Reader)
	stop()
	att.Close()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if copyErr != nil {
		return 0, copyErr
	}
	// The daemon may record the exit code a moment after the stream ends.
	for {
		res, err := c.api.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
		if err != nil {
			return 0, err
		}
		if !res.Running {
			return res.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Events subscribes to Docker's events for nodeID's containers. Several
// events in a burst coalesce into one send: the agent lists again anyway.
func (c *Client) Events(ctx context.Context, nodeID string) (<-chan struct{}, error) {
	if err := checkNodeID(nodeID); err != nil {
		return nil, fmt.Errorf("subscribing to events of node %q: %w", nodeID, err)
	}
	// The SDK reports a dead daemon only through the stream; a ping first
	// makes subscribing to an unreachable daemon an error, not a closed channel.
	if err := c.Ping(ctx); err != nil {
		return nil, fmt.Errorf("subscribing to events of node %s: %w", nodeID, err)
	}
	filters := make(client.Filters).
		Add("type", string(events.ContainerEventType)).
		Add("label", container.LabelNode+"="+nodeID).
		// Not exec_* or health_status: they change nothing the agent lists.
		Add("event", string(events.ActionCreate), string(events.ActionStart),
			string(events.ActionDie), string(events.ActionDestroy))
	res := c.api.Events(ctx, client.EventsListOptions{Filters: filters})
	out := make(chan struct{}, 1)
	go func() {
		defer close(out)
		for {
			select {
			case <-res.Messages:
				select {
				case out <- struct{}{}:
				default:
				}
			case <-res.Err:
				// The SDK sends one error (ctx's when ctx ends) and stops.
				return
			}
		}
	}()
	return out, nil
}

// owned inspects id and fails unless nodeID owns it. A missing container's
// error satisfies cerrdefs.IsNotFound.
func (c *Client) owned(ctx context.Context, nodeID, id string) (dcontainer.InspectResponse, error) {
	if err := checkNodeID(nodeID); err != nil {
		return dcontainer.InspectResponse{}, err
	}
	res, err := c.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	if err != nil {
		return dcontainer.InspectResponse{}, err
	}
	var labels map[string]string
	if res.Container.Config != nil {
		labels = res.Container.Config.Labels
	}
	if !owns(nodeID, labels) {
		return dcontainer.InspectResponse{}, fmt.Errorf("%w: owner is %q, not %s",
			ErrNotOwned, labels[container.LabelNode], nodeID)
	}
	return res.Container, nil
}

// Errors dockerrt returns, wrapped with what was attempted on which container.
var (
	// ErrNotOwned is the refusal to touch a container another node's agent,
	// or no dockfleet agent at all, owns.
	ErrNotOwned = errors.New("dockerrt: container not owned by this node")
	// ErrNoNode guards every node-scoped call: with an empty node ID an
	// unlabelled container would look owned.
	ErrNoNode = errors.New("dockerrt: empty node ID")
)

func checkNodeID(nodeID string) error {
	if nodeID == "" {
		return ErrNoNode
	}
	return nil
}

func owns(nodeID string, labels map[string]string) bool {
	return nodeID != "" && labels[container.LabelNode] == nodeID
}

// stateOf converts Docker's inspect response.
func stateOf(ins dcontainer.InspectResponse) container.State {
	st := container.State{
		ID:   ins.ID,
		Name: strings.TrimPrefix(ins.Name, "/"),
	}
	if ins.Config != nil {
		st.Image = ins.Config.Image
		st.Labels = ins.Config.Labels
	}
	if s := ins.State; s != nil {
		st.Running = s.Running
		st.ExitCode = s.ExitCode
		st.Error = s.Error
		st.StartedAt = parseTime(s.StartedAt)
		st.FinishedAt = parseTime(s.FinishedAt)
	}
	if st.Running && ins.NetworkSettings != nil {
		st.IP = firstIP(ins.NetworkSettings.Networks)
	}
	return st
}

// firstIP returns the address on the first network by name that gives one,
// so that a container on several networks always reports the same address.
func firstIP(networks map[string]*network.EndpointSettings) string {
	for _, name := range slices.Sorted(maps.Keys(networks)) {
		if ep := networks[name]; ep != nil && ep.IPAddress.IsValid() {
			return ep.IPAddress.String()
		}
	}
	return ""
}

// parseTime reads Docker's RFC 3339 times; Docker writes the zero time as
// "0001-01-01T00:00:00Z", which parses to time.Time{}.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}
