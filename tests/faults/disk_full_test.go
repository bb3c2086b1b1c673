package faults

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite" // to check the store's integrity

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/testenv"
	"github.com/dockfleet/dockfleet/tests/harness"
)

// TestServerDiskFull moves the server's data dir onto a small tmpfs and
// fills it: writes through the API answer a clear error (not an internal
// error), reads go on, the agents keep their containers, and once there is
// space again the fleet goes on with nothing acknowledged lost and an
// intact SQLite store. It needs root, for mount.
func TestServerDiskFull(t *testing.T) {
	f, nodes := webNodes(t, 2)
	const update = "    batchSize: 100%\n    minHealthyTime: 0s\n"
	f.Apply(harness.WebSpec("hello:v1", 1, update))
	f.WaitHealthy("web", len(nodes), 90*time.Second)
	f.Token("--uses", "1")
	ctx := context.Background()
	tokens, err := f.Client.ListTokens(ctx)
	if err != nil || len(tokens) == 0 {
		t.Fatalf("listing tokens: %v %v", tokens, err)
	}

	f.Server.Stop()
	dir := filepath.Join(f.Dir, "server")
	onTmpfs(t, dir, "16m")
	f.StartServer()
	for _, n := range nodes {
		f.WaitNodeState(n, api.NodeReady, 30*time.Second)
	}
	started := map[string]map[string]string{}
	for _, n := range nodes {
		started[n] = startTimes(t, f.Containers(n))
	}
	w := watch(t, f)

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	full := time.Now()
	t.Logf("fault: the server's data dir %s is full", dir)
	for _, args := range [][]string{{"apply", "-f", "-"}, {"token", "create"}} {
		out, code := f.CLI(harness.WebSpec("hello:v2", 2, update), args...)
		if code != 1 || !strings.Contains(out, "disk is full") || strings.Contains(out, "internal server error") {
			t.Errorf("dockfleet %s on a full disk: exit %d:\n%s\nwant exit 1 and the API's error that the disk is full", strings.Join(args, " "), code, out)
		}
	}
	if _, err := f.Client.ListNodes(ctx); err != nil {
		t.Errorf("listing nodes on a full disk: %v; want reads to go on", err)
	}
	// Some heartbeats' worth of writes fail meanwhile: each node's heartbeat
	// (which the API reads from memory) two intervals after the disk filled
	// up, and a reconcile pass of each agent.
	testenv.Eventually(t, 30*time.Second, "every node to beat twice on the full disk", func() error {
		for _, n := range nodes {
			if seen := f.Node(n).LastSeen; seen.Before(full.Add(2 * f.Heartbeat)) {
				return fmt.Errorf("node %s last seen %v after the disk filled up", n, seen.Sub(full))
			}
		}
		return nil
	})
	for _, n := range nodes {
		f.WaitReconciled(n, 30*time.Second)
	}
	for name, p := range f.Agents {
		if done, err := p.Exited(0); done {
			t.Fatalf("agent %s exited while the server's disk was full: %v", name, err)
		}
	}
	if done, err := f.Server.Exited(0); done {
		t.Fatalf("the server exited on a full disk: %v", err)
	}
	for _, n := range nodes {
		if now := startTimes(t, f.Containers(n)); !sameStarts(started[n], now) {
			t.Errorf("%s's containers (ID → started) went from %v to %v while the server's disk was full; want the same ones", n, started[n], now)
		}
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	t.Logf("fault healed: space again on %s", dir)
	f.Apply(harness.WebSpec("hello:v2", 2, update))
	if ro := f.WaitRollout("web", 90*time.Second); ro.State != api.RolloutSucceeded || ro.To != 2 {
		t.Fatalf("the rollout after space returned: to revision %d %s (%s); want revision 2 succeeded", ro.To, ro.State, ro.Message)
	}
	f.WaitHealthy("web", len(nodes), 30*time.Second)
	revs, err := f.Client.ListRevisions(ctx, api.DefaultProject, "web")
	if err != nil || len(revs) != 2 {
		t.Errorf("revisions after the full disk: %+v, %v; want 1 and 2", revs, err)
	}
	after, err := f.Client.ListTokens(ctx)
	if err != nil || !slices.ContainsFunc(after, func(tok api.EnrollToken) bool { return tok.ID == tokens[0].ID }) {
		t.Errorf("tokens after the full disk: %+v, %v; want the one created before, %s", after, err, tokens[0].ID)
	}
	w.check(t)

	f.Server.Stop()
	db, err := sql.Open("sqlite", filepath.Join(dir, "dockfleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
		t.Errorf("PRAGMA integrity_check: %q, %v; want ok", res, err)
	}
}

// onTmpfs moves dir's files onto a tmpfs of the given size mounted at dir,
// unmounted when the test ends.
func onTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	saved := dir + ".saved"
	if err := os.Rename(dir, saved); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mounting a tmpfs (CI runs as root): %v: %s", err, out)
		}
		t.Skipf("skipping: mounting a tmpfs needs root: %v: %s", err, out)
	}
	// Lazily: the server may still hold the store open when this runs.
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	if out, err := exec.Command("cp", "-a", saved+"/.", dir).CombinedOutput(); err != nil {
		t.Fatalf("copying the data dir onto the tmpfs: %v: %s", err, out)
	}
}

// fill writes file until its file system has no space left.
func fill(t *testing.T, file string) {
	t.Helper()
	fh, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := fh.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", file, err)
			}
			break
		}
	}
	// The last partial blocks too.
	for _, n := range []int{4096, 512, 1} {
		for {
			if _, err := fh.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
}
