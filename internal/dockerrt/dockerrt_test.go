package dockerrt_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	dcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"go.uber.org/goleak"

	"github.com/dockfleet/dockfleet/internal/container"
	"github.com/dockfleet/dockfleet/internal/dockerrt"
	"github.com/dockfleet/dockfleet/internal/runtimetest"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	image = "hello:v1"
	// missing names a registry on a closed loopback port: the pull fails
	// at once, and no test traffic leaves the host.
	missing = "127.0.0.1:1/dockfleet/missing:v0"
)

// cleanupCtx outlives t.Context, which ends before cleanups run.
func cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func TestConformance(t *testing.T) {
	rt := testenv.RequireDocker(t)
	testenv.HelloImages(t)
	sdk := testenv.SDK(t)
	runtimetest.Run(t, runtimetest.Backend{
		Runtime:      rt,
		Image:        image,
		MissingImage: missing,
		Labels:       map[string]string{testenv.LabelTest: "1"},
		ExecCommand: func(t *testing.T, _ string, code int) []string {
			url := "http://127.0.0.1:8080/healthz"
			if code != 0 {
				url = "http://127.0.0.1:1/" // refused: hello -check exits 1
			}
			return []string{"/hello", "-check", url}
		},
		Crash: func(t *testing.T, id string) int {
			if _, err := sdk.ContainerKill(t.Context(), id, client.ContainerKillOptions{Signal: "SIGKILL"}); err != nil {
				t.Fatalf("killing container %s: %v", id, err)
			}
			return 137
		},
		Delete: func(t *testing.T, id string) {
			if _, err := sdk.ContainerRemove(t.Context(), id, client.ContainerRemoveOptions{Force: true}); err != nil {
				t.Fatalf("removing container %s: %v", id, err)
			}
		},
		CreateUnowned: func(t *testing.T, name string, labels map[string]string) string {
			return createForeign(t, sdk, name, labels)
		},
		Exists: func(t *testing.T, id string) bool {
			return exists(t, sdk, id)
		},
		Push: func(t *testing.T) (string, string) {
			return push(t, testenv.Registry(t)+"/dockfleet/hello:"+testenv.ID())
		},
	})
}

// push puts the image hello:v1 in a registry under ref, then forgets ref
// locally, and returns ref and the digest the registry has for it.
func push(t *testing.T, ref string) (string, string) {
	t.Helper()
	return ref, testenv.Push(t, image, ref, true)
}

// createForeign creates a container directly with the SDK, as something
// other than dockfleet would, and removes it when t ends.
func createForeign(t *testing.T, sdk *client.Client, name string, labels map[string]string) string {
	t.Helper()
	res, err := sdk.ContainerCreate(t.Context(), client.ContainerCreateOptions{
		Name:   name,
		Config: &dcontainer.Config{Image: image, Labels: labels},
	})
	if err != nil {
		t.Fatalf("creating foreign container %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if _, err := sdk.ContainerRemove(ctx, res.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
			t.Errorf("removing foreign container %s: %v", name, err)
		}
	})
	return res.ID
}

func exists(t *testing.T, sdk *client.Client, id string) bool {
	t.Helper()
	_, err := sdk.ContainerInspect(t.Context(), id, client.ContainerInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return false
	}
	if err != nil {
		t.Fatalf("inspecting container %s: %v", id, err)
	}
	return true
}

// run creates and starts cfg's container for node, removed when t ends,
// and waits until List shows it running.
func run(t *testing.T, rt *dockerrt.Client, node string, cfg container.Config) container.State {
	t.Helper()
	cfg.Labels[container.LabelNode] = node
	cfg.Labels[testenv.LabelTest] = "1"
	id, err := rt.Create(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := rt.Remove(ctx, node, id); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := rt.Start(t.Context(), node, id); err != nil {
		t.Fatalf("Start: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		states, err := rt.List(t.Context(), node)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		for _, st := range states {
			if st.ID == id && st.Running {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: not running after 15s", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCreateAppliesConfig(t *testing.T) {
	rt := testenv.RequireDocker(t)
	testenv.HelloImages(t)
	sdk := testenv.SDK(t)
	node := "node-" + testenv.ID()
	name := "dftest-" + testenv.ID()
	// Named volumes outlive their containers; this one is the test's. The
	// cleanup is registered first so that it runs after the container's.
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if _, err := sdk.VolumeRemove(ctx, "dftest-vol-"+name, client.VolumeRemoveOptions{Force: true}); err != nil {
			t.Errorf("removing volume: %v", err)
		}
	})

	st := run(t, rt, node, container.Config{
		Name:    name,
		Image:   image,
		Command: []string{"/hello"},
		Args:    []string{"-addr", ":9090"},
		Env:     map[string]string{"GREETING": "hi", "A": "1"},
		Labels:  map[string]string{container.LabelInstance: "inst-1"},
		Ports: []container.Port{
			{ContainerPort: 9090, HostIP: "127.0.0.1", Protocol: "tcp"}, // no host port: exposed only
			{ContainerPort: 9091, Protocol: "udp"},
		},
		Mounts: []container.Mount{
			{Source: "dftest-vol-" + name, Target: "/data"},
			{Bind: true, Source: t.TempDir(), Target: "/host", ReadOnly: true},
		},
		CPUs:        0.5,
		MemoryBytes: 64 << 20,
	})

	ins, err := sdk.ContainerInspect(t.Context(), st.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	c := ins.Container
	hc := c.HostConfig
	checks := []struct {
		name      string
		got, want string
	}{
		{"name", st.Name, name},
		{"entrypoint", strings.Join(c.Config.Entrypoint, " "), "/hello"},
		{"cmd", strings.Join(c.Config.Cmd, " "), "-addr :9090"},
		{"env A", envValue(c.Config.Env, "A"), "1"},
		{"env GREETING", envValue(c.Config.Env, "GREETING"), "hi"},
		{"label instance", c.Config.Labels[container.LabelInstance], "inst-1"},
		{"nano CPUs", strconv.FormatInt(hc.NanoCPUs, 10), "500000000"},
		{"memory", strconv.FormatInt(hc.Memory, 10), strconv.Itoa(64 << 20)},
		{"restart policy", strings.TrimSuffix(string(hc.RestartPolicy.Name), "no"), ""}, // "" or "no": none
		{"mounts", strconv.Itoa(len(hc.Mounts)), "2"},
		{"volume mount", string(hc.Mounts[0].Type) + " " + hc.Mounts[0].Target, "volume /data"},
		{"bind mount", string(hc.Mounts[1].Type) + " " + hc.Mounts[1].Target + " " + strconv.FormatBool(hc.Mounts[1].ReadOnly), "bind /host true"},
		{"exposed ports", strconv.Itoa(len(c.Config.ExposedPorts)), "3"}, // the image's 8080 too
		{"bindings", strconv.Itoa(len(hc.PortBindings)), "0"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %q; want %q", ck.name, ck.got, ck.want)
		}
	}
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

func TestPublishedPort(t *testing.T) {
	rt := testenv.RequireDocker(t)
	testenv.HelloImages(t)
	sdk := testenv.SDK(t)
	node := "node-" + testenv.ID()
	port := freePort(t)

	st := run(t, rt, node, container.Config{
		Name:   "dftest-" + testenv.ID(),
		Image:  image,
		Labels: map[string]string{},
		Ports:  []container.Port{{ContainerPort: 8080, HostPort: port, HostIP: "127.0.0.1", Protocol: "tcp"}},
	})

	ins, err := sdk.ContainerInspect(t.Context(), st.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	for p, bindings := range ins.Container.HostConfig.PortBindings {
		if p.String() != "8080/tcp" || len(bindings) != 1 || bindings[0].HostIP.String() != "127.0.0.1" || bindings[0].HostPort != strconv.Itoa(port) {
			t.Errorf("port bindings: got %v: %+v; want 8080/tcp on 127.0.0.1:%d", p, bindings, port)
		}
	}

	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/version"
	body := getEventually(t, url)
	if body != "v1\n" {
		t.Errorf("GET %s: got %q; want %q", url, body, "v1\n")
	}
}

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// getEventually GETs url until it answers 200: the server needs a moment
// after its container starts.
func getEventually(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				return string(body)
			}
			err = errors.Join(rerr, errors.New(resp.Status))
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestContainerAddress(t *testing.T) {
	rt := testenv.RequireDocker(t)
	testenv.HelloImages(t)
	st := run(t, rt, "node-"+testenv.ID(), container.Config{
		Name:   "dftest-" + testenv.ID(),
		Image:  "hello:v2",
		Labels: map[string]string{},
	})
	url := "http://" + st.IP + ":8080/version"
	if body := getEventually(t, url); body != "v2\n" {
		t.Errorf("GET %s: got %q; want %q", url, body, "v2\n")
	}
}

func TestEnsureImageMissing(t *testing.T) {
	rt := testenv.RequireDocker(t)
	_, err := rt.EnsureImage(t.Context(), missing)
	if err == nil {
		t.Fatalf("EnsureImage(%s): got nil error; want one", missing)
	}
	// The daemon's own words: it could not reach the registry.
	if msg := err.Error(); !strings.Contains(msg, "connection refused") || !strings.HasPrefix(msg, "pulling image "+missing+": ") {
		t.Errorf("EnsureImage(%s): got %q; want the daemon's message after the reference", missing, msg)
	}
}

func TestExecTimeout(t *testing.T) {
	rt := testenv.RequireDocker(t)
	testenv.HelloImages(t)
	node := "node-" + testenv.ID()
	st := run(t, rt, node, container.Config{Name: "dftest-" + testenv.ID(), Image: image, Labels: map[string]string{}})

	// The hello image has no sleep; serving is what hello does until killed.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := rt.Exec(ctx, node, st.ID, []string{"/hello", "-addr", "127.0.0.1:9999"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Exec past its deadline: got %v; want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Exec past its deadline: returned after %v; want about 300ms", d)
	}
	code, err := rt.Exec(t.Context(), node, st.ID, []string{"/nonexistent"})
	if err != nil || code != 126 && code != 127 {
		t.Errorf("Exec of a missing command: got %d, %v; want 126 or 127, nil", code, err)
	}
}

func TestInfoAndPing(t *testing.T) {
	rt := testenv.RequireDocker(t)
	if err := rt.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	info, err := rt.Info(t.Context())
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	// The daemon runs on this host, so Go's names for it are this test's.
	if info.OS != runtime.GOOS || info.Arch != runtime.GOARCH || info.RuntimeVersion == "" {
		t.Errorf("Info: got %+v; want OS %q, arch %q and a version", info, runtime.GOOS, runtime.GOARCH)
	}
}

func TestUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	rt, err := dockerrt.New("unix://" + t.TempDir() + "/no.sock")
	if err != nil {
		t.Fatalf("New must not contact the daemon: %v", err)
	}
	defer rt.Close()
	if err := rt.Ping(ctx); err == nil || !strings.Contains(err.Error(), "pinging docker at unix://") {
		t.Errorf("Ping with no daemon: got %v; want an error naming the host", err)
	}
	if _, err := rt.List(ctx, "node"); err == nil {
		t.Error("List with no daemon succeeded; want an error")
	}
}

func TestEnsureImagePulls(t *testing.T) {
	rt := testenv.RequireDocker(t)
	testenv.HelloImages(t)
	registry := testenv.Registry(t)
	ref, pinned := push(t, registry+"/dockfleet/hello:"+testenv.ID())
	if ok, err := rt.HasImage(t.Context(), ref); err != nil || ok {
		t.Fatalf("HasImage(%s) before the pull: got %t, %v; want false, nil", ref, ok, err)
	}

	got, err := rt.EnsureImage(t.Context(), ref)
	if err != nil {
		t.Fatalf("EnsureImage(%s): %v", ref, err)
	}
	if got != pinned {
		t.Errorf("EnsureImage(%s): got digest %q; want the pushed %q", ref, got, pinned)
	}
	if ok, err := rt.HasImage(t.Context(), ref); err != nil || !ok {
		t.Errorf("HasImage(%s) after the pull: got %t, %v; want true, nil", ref, ok, err)
	}

	// A tag the registry does not have: its answer must reach the caller.
	absent := registry + "/dockfleet/hello:absent"
	_, err = rt.EnsureImage(t.Context(), absent)
	if err == nil || !strings.Contains(err.Error(), "manifest unknown") {
		t.Errorf("EnsureImage(%s): got %v; want the registry's \"manifest unknown\"", absent, err)
	}
	// So does a digest it does not have, which is pulled by that digest.
	unknown := registry + "/dockfleet/hello@sha256:" + strings.Repeat("0", 64)
	_, err = rt.EnsureImage(t.Context(), unknown)
	if err == nil || !strings.Contains(err.Error(), "manifest unknown") {
		t.Errorf("EnsureImage(%s): got %v; want the registry's \"manifest unknown\"", unknown, err)
	}
}

// TestEnsureImageDigest covers which of an image's RepoDigests EnsureImage
// reports, against a stand-in for the daemon's API that answers inspect
// with the RepoDigests of each case.
func TestEnsureImageDigest(t *testing.T) {
	const (
		a = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		b = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	)
	tests := []struct {
		name        string
		ref         string
		repoDigests []string
		inspected   string // the name inspect was asked for
		want        string
	}{
		{"built here", "hello:v1", nil, "hello:v1", ""},
		{"pushed elsewhere only", "hello:v1", []string{"127.0.0.1:5000/hello@" + a}, "hello:v1", ""},
		{"docker hub", "hello:v1", []string{"127.0.0.1:5000/hello@" + b, "hello@" + a}, "hello:v1", "hello@" + a},
		{"docker hub, fully qualified", "docker.io/library/hello:v1", []string{"docker.io/library/hello@" + a}, "docker.io/library/hello:v1", "hello@" + a},
		{"docker hub user", "user/app", []string{"user/app@" + a}, "user/app", "user/app@" + a},
		{"loopback registry", "127.0.0.1:5000/hello:v1", []string{"hello@" + a, "127.0.0.1:5000/hello@" + b}, "127.0.0.1:5000/hello:v1", "127.0.0.1:5000/hello@" + b},
		{"several in the repository", "hello:v1", []string{"hello@" + a, "hello@" + b}, "hello:v1", ""},
		{"one digest twice", "hello:v1", []string{"hello@" + a, "docker.io/library/hello@" + a}, "hello:v1", "hello@" + a},
		{"by digest", "hello@" + b, []string{"hello@" + a, "hello@" + b}, "hello@" + b, "hello@" + b},
		{"by tag and digest", "docker.io/library/hello:v1@" + b, nil, "hello@" + b, "hello@" + b},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var inspected string
			mux := http.NewServeMux()
			mux.HandleFunc("/_ping", func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Api-Version", "1.41")
				_, _ = io.WriteString(w, "OK")
			})
			mux.HandleFunc("GET /v1.41/images/{ref...}", func(w http.ResponseWriter, r *http.Request) {
				inspected = strings.TrimSuffix(r.PathValue("ref"), "/json")
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(map[string]any{"Id": a, "RepoDigests": tt.repoDigests})
			})
			srv := httptest.NewServer(mux)
			defer srv.Close()
			rt, err := dockerrt.New("tcp://" + srv.Listener.Addr().String())
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer rt.Close()

			got, err := rt.EnsureImage(t.Context(), tt.ref)
			if err != nil {
				t.Fatalf("EnsureImage(%s): %v", tt.ref, err)
			}
			if got != tt.want {
				t.Errorf("EnsureImage(%s) with RepoDigests %q: got %q; want %q", tt.ref, tt.repoDigests, got, tt.want)
			}
			if inspected != tt.inspected {
				t.Errorf("EnsureImage(%s): inspected %q; want %q", tt.ref, inspected, tt.inspected)
			}
		})
	}
}

// TestEnsureImageStreamError covers a pull that fails after the daemon has
// answered 200: the registry's message then comes inside the progress
// stream. A stand-in for the daemon's API makes that happen on demand.
func TestEnsureImageStreamError(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		_, _ = io.WriteString(w, "OK")
	})
	mux.HandleFunc("GET /v1.41/images/{ref...}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"message":"No such image: r.example/app:v1"}`)
	})
	mux.HandleFunc("POST /v1.41/images/create", func(w http.ResponseWriter, r *http.Request) {
		if got := r.URL.Query().Get("fromImage") + ":" + r.URL.Query().Get("tag"); got != "r.example/app:v1" {
			t.Errorf("pull: got %s; want r.example/app:v1", got)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"Pulling from app","id":"v1"}
{"status":"Downloading","progressDetail":{"current":1,"total":2},"id":"abc"}
{"errorDetail":{"message":"unknown blob"},"error":"unknown blob"}
`)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	rt, err := dockerrt.New("tcp://" + srv.Listener.Addr().String())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer rt.Close()
	_, err = rt.EnsureImage(t.Context(), "r.example/app:v1")
	if want := "pulling image r.example/app:v1: unknown blob"; err == nil || err.Error() != want {
		t.Errorf("EnsureImage: got %v; want %q", err, want)
	}
}

func TestForeignErrors(t *testing.T) {
	rt := testenv.RequireDocker(t)
	testenv.HelloImages(t)
	sdk := testenv.SDK(t)
	node := "node-" + testenv.ID()
	tests := []struct {
		name   string
		labels map[string]string
	}{
		{"other node", map[string]string{container.LabelNode: node + "-other", testenv.LabelTest: "1"}},
		{"unlabelled", map[string]string{testenv.LabelTest: "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := createForeign(t, sdk, "dftest-"+testenv.ID(), tt.labels)
			err := rt.Remove(t.Context(), node, id)
			if !errors.Is(err, dockerrt.ErrNotOwned) {
				t.Errorf("Remove: got %v; want ErrNotOwned", err)
			}
			if !exists(t, sdk, id) {
				t.Errorf("container %s: removed; want it untouched", id)
			}
		})
	}
}
