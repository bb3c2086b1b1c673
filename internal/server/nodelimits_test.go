package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/agentsvc"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// A node that answers pre-pull requests the server never made, each with
// an image name of 512 KiB, costs the server no memory: the answers are
// dropped, and said so sparsely (review finding 4: 800 such answers kept
// 405 MiB of heap).
func TestUnaskedPullAnswersAreDropped(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	f.startGoodAgents(t)

	const src, answers = "127.0.0.10", 300
	conn := f.conn(t, src, f.enroll(t, "abuser", src))
	before := liveHeap()
	began := time.Now()
	stop := abuse(func(context.Context) {
		// All the answers are sent, however long the good agents' check
		// takes: the stream does not end with the abuse's context.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		stream, err := openStream(ctx, conn)
		if err != nil {
			t.Errorf("opening a stream: %v", err)
			return
		}
		for i := range answers {
			img := fmt.Sprintf("%d-%s", i, strings.Repeat("x", 512<<10))
			if err := stream.Send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Pulled{Pulled: &agentproto.ImagePull{Image: img}}}); err != nil {
				t.Errorf("answer %d: the stream ended: %v", i+1, recvUntilError(stream))
				return
			}
		}
		// The server reads a stream's messages in order: once it has seen
		// the end, it has handled every answer.
		stream.CloseSend()
		if err := recvUntilError(stream); !errors.Is(err, io.EOF) {
			t.Errorf("the stream ended with %v; want the server to read all %d answers and end it cleanly", err, answers)
		}
	})
	f.checkGoodAgents(t)
	stop()
	elapsed := time.Since(began)

	after := liveHeap()
	if grew := int64(after) - int64(before); grew > 64<<20 {
		t.Errorf("the live heap grew by %d MiB (%d -> %d MiB) after %d unasked pull answers of 512 KiB; want it bounded",
			grew>>20, before>>20, after>>20, answers)
	}
	if kept := f.srv.fleet.ctl.PullNodes(); kept != 0 {
		t.Errorf("the server keeps pull answers of %d nodes; want none: it asked for no pull", kept)
	}
	if n := f.countLines("ignoring an image pull answer"); n < 1 || n > maxLogLines(elapsed) {
		t.Errorf("the server logged %d lines about %d unasked answers in %s; want 1 to %d", n, answers, elapsed.Round(time.Second), maxLogLines(elapsed))
	}
}

// liveHeap is the bytes of the heap still reachable after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// What a node says about itself (facts, its host error) is kept cut to a
// bound and with its control characters escaped, so it cannot fill the
// store or steer an operator's terminal (review findings 4 and 13).
func TestNodeStringsAreBoundedAndEscaped(t *testing.T) {
	f := startAbuseFleet(t, Config{})
	const src = "127.0.0.10"
	conn := f.conn(t, src, f.enroll(t, "abuser", src))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := openStream(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	hostname := "\x1b]0;owned\x07\x1b[2J\x1b[1;31mTRUSTED-HOST\x1b[0m" + strings.Repeat("h", 100<<10)
	hostErr := "\x1b[2K\rall good \x1b[8m(hidden)" + strings.Repeat("e", 100<<10)
	if err := stream.Send(&agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Heartbeat{Heartbeat: &agentproto.Heartbeat{
		Error: hostErr, Facts: &agentproto.Facts{Hostname: hostname, Os: "linux"}}}}); err != nil {
		t.Fatal(err)
	}
	var n api.Node
	testenv.Eventually(t, 30*time.Second, "the node's facts and error in the API", func() error {
		if n, err = f.api.GetNode(ctx, "abuser"); err != nil {
			return err
		}
		if n.Facts.OS != "linux" || n.Error == "" {
			return fmt.Errorf("node %+v", n)
		}
		return nil
	})
	for _, tt := range []struct {
		field, got, prefix string
		max                int
	}{
		{"facts.hostname", n.Facts.Hostname, `\x1b]0;owned\a\x1b[2J\x1b[1;31mTRUSTED-HOST\x1b[0mhhh`, agentsvc.MaxNodeFact},
		{"error", n.Error, `\x1b[2K\rall good \x1b[8m(hidden)eee`, agentsvc.MaxNodeText},
	} {
		if len(tt.got) > tt.max || !strings.HasPrefix(tt.got, tt.prefix) || strings.ContainsAny(tt.got, "\x1b\x07\r") {
			t.Errorf("%s kept as %d bytes %.80q...; want at most %d bytes starting %q, its control characters escaped",
				tt.field, len(tt.got), tt.got, tt.max, tt.prefix)
		}
	}
	if f.countLines("cut or escaped a string an agent sent") != 1 {
		t.Errorf("the server did not say once that it cut the node's strings; log:\n%s", f.logs.String())
	}
}
