// Package testenv gives integration and end-to-end tests what they need
// from the machine: a Docker daemon (skipping the test without one, unless
// CI=true makes its absence a failure), the hello demo images, and names
// and labels that keep concurrent test runs from seeing each other's
// containers.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/dockfleet/dockfleet/internal/dockerrt"
)

// LabelTest marks every container a test creates, so that leftovers of a
// killed test run can be found: docker ps -a --filter label=dockfleet.test.
const LabelTest = "dockfleet.test"

// helloImages are the demo images examples/hello/build-images.sh builds.
var helloImages = []string{"hello:v1", "hello:v2", "hello:broken"}

// RequireDocker returns a client of the local Docker daemon, closed when
// the test ends. Without a reachable daemon it skips the test, or fails it
// when the environment variable CI is "true": CI must not pass by skipping.
func RequireDocker(t testing.TB) *dockerrt.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dockerrt.New("")
	if err == nil {
		err = c.Ping(ctx)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("docker is required when CI=true: %v", err)
		}
		t.Skipf("skipping: no docker daemon: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// SDK returns a raw Docker SDK client for what tests do behind dockerrt's
// back, such as creating containers another node owns. The client is made
// and pinged once per test binary: tests call SDK in polling loops, and a
// client (and a ping) per call would load the daemon and leave idle
// connections behind. Callers must not close it. Without a reachable daemon it skips or
// fails the test as RequireDocker does. It calls t only when it skips or
// fails, so a goroutine may call it once a test has.
func SDK(t testing.TB) *client.Client {
	t.Helper()
	sdk.once.Do(func() {
		sdk.c, sdk.err = client.New(client.FromEnv)
		if sdk.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, sdk.err = sdk.c.Ping(ctx, client.PingOptions{}); sdk.err != nil {
			_ = sdk.c.Close()
		}
	})
	if sdk.err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("docker is required when CI=true: %v", sdk.err)
		}
		t.Skipf("skipping: no docker daemon: %v", sdk.err)
	}
	// Close only drops the client's idle connections, which it dials again
	// when used: their goroutines must not outlive the test (goleak).
	t.Cleanup(func() { _ = sdk.c.Close() })
	return sdk.c
}

// sdk is the one SDK client of the test binary.
var sdk struct {
	once sync.Once
	c    *client.Client
	err  error
}

var (
	buildOnce sync.Once
	buildErr  error
)

// HelloImages makes sure the images hello:v1, hello:v2 and hello:broken
// exist, building the missing ones once per test process with
// examples/hello/build-images.sh. It calls RequireDocker first.
func HelloImages(t testing.TB) {
	t.Helper()
	c := RequireDocker(t)
	buildOnce.Do(func() { buildErr = buildHello(c) })
	if buildErr != nil {
		t.Fatalf("building hello images: %v", buildErr)
	}
}

func buildHello(c *dockerrt.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	missing := false
	for _, ref := range helloImages {
		ok, err := c.HasImage(ctx, ref)
		if err != nil {
			return err
		}
		missing = missing || !ok
	}
	if !missing {
		return nil
	}
	script := filepath.Join(repoRoot(), "examples", "hello", "build-images.sh")
	out, err := exec.CommandContext(ctx, script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("running %s: %w\n%s", script, err, out)
	}
	return nil
}

// repoRoot finds the module's root from this file's place in it, so tests
// in any package find the build script.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Registry starts Debian's docker-registry (distribution 2.8) on a free
// loopback port, stopped when the test ends, and returns its address,
// "127.0.0.1:PORT". Docker pushes to and pulls from loopback registries
// without TLS. Without the docker-registry binary it skips the test, or
// fails it when CI=true.
func Registry(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("docker-registry is required when CI=true: %v", err)
		}
		t.Skipf("skipping: %v", err)
	}
	addr := FreeAddr(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yml")
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n",
		filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		t.Fatalf("writing registry config: %v", err)
	}
	// A file, not a buffer: the registry writes while a failing test reads.
	logs, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatalf("creating registry log: %v", err)
	}
	defer logs.Close()
	readLogs := func() string {
		b, _ := os.ReadFile(logs.Name())
		return string(b)
	}
	cmd := exec.Command(bin, "serve", config)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting docker-registry: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	url := "http://" + addr + "/v2/"
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("docker-registry exited: %v\n%s", err, readLogs())
		default:
		}
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry on %s: not ready after 15s: %v\n%s", addr, err, readLogs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreeAddr returns a loopback address nothing listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// ID returns a random name part, unique among concurrent test runs, for node
// IDs and container names: several test binaries share one daemon.
func ID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails: crypto/rand aborts the program instead
	return hex.EncodeToString(b)
}

// Push tags the local image source as ref (which names a tag), pushes it to
// ref's registry and returns the digest the registry holds, pinned as Docker
// records it (repo@sha256:…). With forget, ref and its digest are untagged
// from the daemon at once, so that the next pull really pulls; either way
// they are untagged when the test ends.
func Push(t testing.TB, source, ref string, forget bool) string {
	t.Helper()
	sdk := SDK(t)
	ctx := context.Background()
	if _, err := sdk.ImageTag(ctx, client.ImageTagOptions{Source: source, Target: ref}); err != nil {
		t.Fatalf("tagging %s as %s: %v", source, ref, err)
	}
	var pinned string
	untag := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, r := range []string{ref, pinned} {
			if r == "" {
				continue
			}
			if _, err := sdk.ImageRemove(ctx, r, client.ImageRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
				t.Errorf("removing image %s: %v", r, err)
			}
		}
	}
	t.Cleanup(untag)
	res, err := sdk.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: "e30="}) // base64 "{}": no credentials
	if err == nil {
		err = res.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	ins, err := sdk.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatalf("inspecting %s: %v", ref, err)
	}
	repo := ref[:strings.LastIndex(ref, ":")]
	for _, d := range ins.RepoDigests {
		if strings.HasPrefix(d, repo+"@sha256:") {
			pinned = d
		}
	}
	if pinned == "" {
		t.Fatalf("pushed %s: got RepoDigests %q; want one in %s", ref, ins.RepoDigests, repo)
	}
	if forget {
		untag()
	}
	return pinned
}
