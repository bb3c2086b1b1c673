package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	mcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// swarmBench is Docker Swarm on the same engine: a one-node swarm
// (`docker swarm init --advertise-addr 127.0.0.1`, listening on loopback
// only), a service of N replicas with the hello binary's check as its
// HEALTHCHECK every second, and `docker service update --image` with
// --update-parallelism BATCH --update-delay 0s --update-order stop-first.
// Images are used as they are on the daemon (--no-resolve-image): there is
// no registry.
//
// A phase is done when N tasks of the target image are running and N
// containers of the target image are healthy. Swarm reports a task running
// only once its container's HEALTHCHECK passed; the benchmark checks the
// containers' health as well.
type swarmBench struct {
	d   *docker
	cfg config

	// leave says whether teardown leaves the swarm: the benchmark made it
	// (now, or in an earlier run that was killed), so it is no one else's.
	leave     bool
	gwExisted bool // docker_gwbridge existed before the swarm: keep it
	serviceID string
}

const gwBridge = "docker_gwbridge"

func (s *swarmBench) setup(ctx context.Context) error {
	c := s.d.c
	info, err := c.Info(ctx, client.InfoOptions{})
	if err != nil {
		return fmt.Errorf("docker info: %w", err)
	}
	sw := info.Info.Swarm
	switch sw.LocalNodeState {
	case swarm.LocalNodeStateInactive:
		_, err := c.NetworkInspect(ctx, gwBridge, client.NetworkInspectOptions{})
		s.gwExisted = err == nil
		s.cfg.logf("swarm: docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377")
		_, err = c.SwarmInit(ctx, client.SwarmInitOptions{
			ListenAddr:    "127.0.0.1:2377",
			AdvertiseAddr: "127.0.0.1",
			Spec:          swarm.Spec{Annotations: swarm.Annotations{Labels: s.d.labels()}},
		})
		if err != nil {
			return fmt.Errorf("docker swarm init: %w", err)
		}
		s.leave = true
	case swarm.LocalNodeStateActive:
		if !sw.ControlAvailable {
			return errors.New("this daemon is a worker of a swarm; run the benchmark on a manager or outside any swarm")
		}
		ins, err := c.SwarmInspect(ctx, client.SwarmInspectOptions{})
		if err != nil {
			return fmt.Errorf("docker swarm inspect: %w", err)
		}
		if _, ours := ins.Swarm.Spec.Labels[benchLabel]; ours {
			s.leave = true // left behind by a benchmark that was killed
			s.cfg.logf("swarm: reusing the swarm an earlier benchmark run left; it is left at the end")
		} else {
			s.cfg.logf("swarm: this daemon already manages a swarm; using it, and not leaving it at the end")
		}
	default:
		return fmt.Errorf("swarm state %q: want inactive (or active as a manager)", sw.LocalNodeState)
	}
	return nil
}

func (s *swarmBench) create(ctx context.Context) error {
	replicas := uint64(s.cfg.n)
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "dockfleet-bench-" + s.cfg.runID, Labels: s.d.labels()},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{
				Image:  s.cfg.imageV1,
				Labels: s.d.labels(),
				// The same check as dockfleet's: GET /healthz, every second,
				// one second to answer, three failures make it unhealthy.
				Healthcheck: &mcontainer.HealthConfig{
					Test:     []string{"CMD", "/hello", "-check", "http://127.0.0.1:8080/healthz"},
					Interval: time.Second,
					Timeout:  time.Second,
					Retries:  3,
				},
			},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
		UpdateConfig: &swarm.UpdateConfig{
			Parallelism:   uint64(s.cfg.batch),
			Delay:         0,
			Order:         swarm.UpdateOrderStopFirst,
			FailureAction: swarm.UpdateFailureActionPause,
		},
	}
	res, err := s.d.c.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: spec}) // QueryRegistry false: --no-resolve-image
	if err != nil {
		return fmt.Errorf("docker service create: %w", err)
	}
	s.serviceID = res.ID
	return s.wait(ctx, s.cfg.imageV1)
}

func (s *swarmBench) update(ctx context.Context) error {
	ins, err := s.d.c.ServiceInspect(ctx, s.serviceID, client.ServiceInspectOptions{})
	if err != nil {
		return fmt.Errorf("docker service inspect: %w", err)
	}
	spec := ins.Service.Spec
	spec.TaskTemplate.ContainerSpec.Image = s.cfg.imageV2
	_, err = s.d.c.ServiceUpdate(ctx, s.serviceID, client.ServiceUpdateOptions{Version: ins.Service.Version, Spec: spec})
	if err != nil {
		return fmt.Errorf("docker service update --image %s: %w", s.cfg.imageV2, err)
	}
	return s.wait(ctx, s.cfg.imageV2)
}

// wait polls until N tasks of image run and N containers of image are healthy.
func (s *swarmBench) wait(ctx context.Context, image string) error {
	imageID := s.d.imageIDs[image]
	return poll(ctx, s.cfg.poll, func(ctx context.Context) (bool, string, error) {
		tasks, err := s.d.c.TaskList(ctx, client.TaskListOptions{
			Filters: make(client.Filters).Add("service", s.serviceID).Add("desired-state", "running"),
		})
		if err != nil {
			return false, "", fmt.Errorf("listing tasks: %w", err)
		}
		running, states := 0, map[swarm.TaskState]int{}
		for _, t := range tasks.Items {
			states[t.Status.State]++
			if t.Status.State == swarm.TaskStateRunning && t.Spec.ContainerSpec != nil && sameImage(t.Spec.ContainerSpec.Image, image) {
				running++
			}
		}
		cs, err := s.d.c.ContainerList(ctx, client.ContainerListOptions{
			Filters: make(client.Filters).Add("label", "com.docker.swarm.service.id="+s.serviceID).Add("health", "healthy"),
		})
		if err != nil {
			return false, "", fmt.Errorf("listing containers: %w", err)
		}
		healthy := 0
		for _, c := range cs.Items {
			if c.ImageID == imageID {
				healthy++
			}
		}
		status := fmt.Sprintf("%d of %d tasks of %s running (task states %v), %d containers healthy", running, s.cfg.n, image, states, healthy)
		return running == s.cfg.n && healthy == s.cfg.n, status, nil
	})
}

// sameImage compares a task's image with the one asked for: the API may
// write "hello:v1" as "hello:v1" or, pinned, "hello:v1@sha256:…".
func sameImage(task, want string) bool {
	return task == want || (len(task) > len(want) && task[:len(want)+1] == want+"@")
}

// teardown removes the service, waits for its containers to go, leaves the
// swarm the benchmark made and removes docker_gwbridge, which leaving
// leaves behind.
func (s *swarmBench) teardown(ctx context.Context) error {
	var errs []error
	c := s.d.c
	if s.serviceID != "" {
		if _, err := c.ServiceRemove(ctx, s.serviceID, client.ServiceRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("docker service rm: %w", err))
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := s.d.waitGone(wctx, make(client.Filters).Add("label", "com.docker.swarm.service.id="+s.serviceID))
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("waiting for the service's containers to go: %w", err))
		}
	}
	if s.leave {
		s.cfg.logf("swarm: docker swarm leave --force; docker network rm %s", gwBridge)
		if _, err := c.SwarmLeave(ctx, client.SwarmLeaveOptions{Force: true}); err != nil {
			errs = append(errs, fmt.Errorf("docker swarm leave --force: %w", err))
		}
		if !s.gwExisted {
			// The network may take a moment to lose its last endpoint.
			nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := poll(nctx, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
				_, err := c.NetworkRemove(ctx, gwBridge, client.NetworkRemoveOptions{})
				if err == nil || cerrdefs.IsNotFound(err) {
					return true, "", nil
				}
				return false, err.Error(), nil
			})
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("docker network rm %s: %w", gwBridge, err))
			}
		}
	}
	// Swarm's stopped task containers, and anything else of this run.
	if err := s.d.removeAll(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
