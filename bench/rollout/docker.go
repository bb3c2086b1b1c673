package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	mcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// docker is the benchmark's own connection to the daemon: preflight checks,
// the warm-up, raw's calls and the clean-up.
type docker struct {
	c   *client.Client
	cfg config
	// imageIDs maps cfg.imageV1 and cfg.imageV2 to the image IDs the
	// daemon has for them, to recognise a container's image whatever name
	// it was created by.
	imageIDs map[string]string
}

// preflight checks that the daemon answers and has both images.
func (d *docker) preflight(ctx context.Context) error {
	if _, err := d.c.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("docker daemon: %w", err)
	}
	d.imageIDs = map[string]string{}
	for _, ref := range []string{d.cfg.imageV1, d.cfg.imageV2} {
		ins, err := d.c.ImageInspect(ctx, ref)
		if cerrdefs.IsNotFound(err) {
			return fmt.Errorf("image %s: not on this daemon; build it with `make images`", ref)
		}
		if err != nil {
			return fmt.Errorf("inspecting image %s: %w", ref, err)
		}
		d.imageIDs[ref] = ins.ID
	}
	if d.imageIDs[d.cfg.imageV1] == d.imageIDs[d.cfg.imageV2] {
		return fmt.Errorf("%s and %s are the same image (%s): the update would change nothing", d.cfg.imageV1, d.cfg.imageV2, d.imageIDs[d.cfg.imageV1])
	}
	return nil
}

// runFilter selects the containers of this run.
func (d *docker) runFilter() client.Filters {
	return make(client.Filters).Add("label", benchLabel+"="+d.cfg.runID)
}

// labels are the labels of everything the run makes.
func (d *docker) labels() map[string]string {
	return map[string]string{benchLabel: d.cfg.runID}
}

// otherContainers counts the running containers that are not this run's:
// other work on the daemon skews the times, and the report says so.
func (d *docker) otherContainers(ctx context.Context) int {
	res, err := d.c.ContainerList(ctx, client.ContainerListOptions{})
	if err != nil {
		return -1
	}
	n := 0
	for _, c := range res.Items {
		if c.Labels[benchLabel] != d.cfg.runID {
			n++
		}
	}
	return n
}

// removeAll force-removes every container of this run.
func (d *docker) removeAll(ctx context.Context) error {
	res, err := d.c.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: d.runFilter()})
	if err != nil {
		return fmt.Errorf("listing the run's containers: %w", err)
	}
	return d.removeContainers(ctx, res.Items)
}

func (d *docker) removeContainers(ctx context.Context, cs []mcontainer.Summary) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, 10)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := d.remove(ctx, c.ID); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// remove kills and removes a container, as dockfleet's agent does.
func (d *docker) remove(ctx context.Context, id string) error {
	_, err := d.c.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("removing container %.12s: %w", id, err)
	}
	return nil
}

// waitGone waits until no container matches f, running or not.
func (d *docker) waitGone(ctx context.Context, f client.Filters) error {
	return poll(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		res, err := d.c.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
		if err != nil {
			return false, "", err
		}
		return len(res.Items) == 0, fmt.Sprintf("%d containers left", len(res.Items)), nil
	})
}

// run creates and starts a container of image and returns its ID and
// bridge address.
func (d *docker) run(ctx context.Context, name, image string) (id, ip string, err error) {
	res, err := d.c.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name:       name,
		Config:     &mcontainer.Config{Image: image, Labels: d.labels()},
		HostConfig: &mcontainer.HostConfig{},
	})
	if err != nil {
		return "", "", fmt.Errorf("creating container %s: %w", name, err)
	}
	if _, err := d.c.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		return res.ID, "", fmt.Errorf("starting container %s: %w", name, err)
	}
	ins, err := d.c.ContainerInspect(ctx, res.ID, client.ContainerInspectOptions{})
	if err != nil {
		return res.ID, "", fmt.Errorf("inspecting container %s: %w", name, err)
	}
	if ns := ins.Container.NetworkSettings; ns != nil {
		for _, ep := range ns.Networks {
			if ep != nil && ep.IPAddress.IsValid() {
				return res.ID, ep.IPAddress.String(), nil
			}
		}
	}
	return res.ID, "", fmt.Errorf("container %s has no address on any network", name)
}

// probeClient is the benchmark's health probe: one GET of /healthz, as the
// hello binary's -check mode and dockfleet's HTTP check do.
var probeClient = &http.Client{
	Timeout:       time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{DisableKeepAlives: true},
}

// waitHealthy GETs http://ip:8080/healthz every interval until it answers 2xx or 3xx.
func waitHealthy(ctx context.Context, ip string, interval time.Duration) error {
	url := "http://" + ip + ":8080/healthz"
	return poll(ctx, interval, func(ctx context.Context) (bool, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, "", err
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return false, err.Error(), nil
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		ok := resp.StatusCode >= 200 && resp.StatusCode < 400
		return ok, fmt.Sprintf("%s: status %d", url, resp.StatusCode), nil
	})
}

// warmup runs and removes one container of each image, so that the first
// system measured does not pay for loading the images' layers.
func (d *docker) warmup(ctx context.Context) error {
	d.cfg.logf("warm-up: one container of %s and of %s", d.cfg.imageV1, d.cfg.imageV2)
	for i, image := range []string{d.cfg.imageV1, d.cfg.imageV2} {
		id, ip, err := d.run(ctx, fmt.Sprintf("dockfleet-bench-%s-warmup-%d", d.cfg.runID, i), image)
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err = waitHealthy(wctx, ip, d.cfg.poll)
			cancel()
		}
		if id != "" {
			if rerr := d.remove(ctx, id); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		if err != nil {
			return fmt.Errorf("warm-up with %s: %w", image, err)
		}
	}
	return nil
}
