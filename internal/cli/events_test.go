package cli

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
)

const eventsPath = "/v1/projects/default/events"

// cannedEvents are events 1 to n of hello's rollout, a minute apart.
func cannedEvents(n int) []api.Event {
	types := []string{"rollout.started", "batch.started", "instance.failed", "rollout.rolled_back"}
	msgs := []string{"rollout ab12cd from revision 1 to 2", "batch 1 of 2: i-hello-1", "i-hello-1 on web-1: exited with code 1", "back at revision 1"}
	var evs []api.Event
	for i := range n {
		evs = append(evs, api.Event{Seq: int64(i + 1), Time: testNow.Add(time.Duration(i-n) * time.Minute),
			Project: "default", Deployment: "hello", Rollout: "ab12cd", Type: types[i%4], Message: msgs[i%4]})
	}
	return evs
}

// eventsAfter answers the events after the query's after, a page of at
// most pageSize.
func eventsAfter(evs []api.Event, pageSize int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
		page := []api.Event{}
		for _, ev := range evs {
			if ev.Seq > after && len(page) < pageSize {
				page = append(page, ev)
			}
		}
		writeAnswer(w, okAnswer(page))
	}
}

func TestEvents(t *testing.T) {
	f := newFakeAPI(t)
	f.onFunc("GET "+eventsPath, eventsAfter(cannedEvents(4), 3))
	r := runCLI(t, nil, "", f.args("events", "--deployment", "hello")...)
	checkOutput(t, r, exitOK, lines(
		"TIME                   DEPLOYMENT   TYPE                  MESSAGE",
		"2026-03-01T11:56:00Z   hello        rollout.started       rollout ab12cd from revision 1 to 2",
		"2026-03-01T11:57:00Z   hello        batch.started         batch 1 of 2: i-hello-1",
		"2026-03-01T11:58:00Z   hello        instance.failed       i-hello-1 on web-1: exited with code 1",
		"2026-03-01T11:59:00Z   hello        rollout.rolled_back   back at revision 1",
	))
	var queries []string
	for _, req := range f.requests() {
		queries = append(queries, req.Query)
	}
	want := []string{"deployment=hello", "after=3&deployment=hello", "after=4&deployment=hello"}
	if len(queries) != len(want) {
		t.Fatalf("queries %q; want %q", queries, want)
	}
	for i := range want {
		if queries[i] != want[i] {
			t.Errorf("query %d: got %q; want %q", i, queries[i], want[i])
		}
	}
}

func TestEventsNone(t *testing.T) {
	f := newFakeAPI(t)
	f.on("GET "+eventsPath, http.StatusOK, []api.Event{})
	r := runCLI(t, nil, "", f.args("events")...)
	checkOutput(t, r, exitOK, "TIME   DEPLOYMENT   TYPE   MESSAGE\n")
}

// TestEventsFollow follows the events with long polls, and stops without an
// error when interrupted.
func TestEventsFollow(t *testing.T) {
	evs := cannedEvents(4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu    sync.Mutex
		polls int
	)
	f := newFakeAPI(t)
	backlog := eventsAfter(evs[:2], 1000)
	f.onFunc("GET "+eventsPath, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") == "" {
			backlog(w, r)
			return
		}
		mu.Lock()
		polls++
		n := polls
		mu.Unlock()
		switch n {
		case 1: // a poll whose wait ran out
			writeAnswer(w, okAnswer([]api.Event{}))
		case 2:
			writeAnswer(w, okAnswer(evs[2:]))
		default: // the user interrupts while the poll waits
			cancel()
			<-r.Context().Done()
		}
	})
	r := runCLIContext(ctx, t, nil, "", f.args("events", "-f")...)
	checkOutput(t, r, exitOK, lines(
		"TIME                   DEPLOYMENT   TYPE              MESSAGE",
		"2026-03-01T11:56:00Z   hello        rollout.started   rollout ab12cd from revision 1 to 2",
		"2026-03-01T11:57:00Z   hello        batch.started     batch 1 of 2: i-hello-1",
		"2026-03-01T11:58:00Z   hello        instance.failed       i-hello-1 on web-1: exited with code 1",
		"2026-03-01T11:59:00Z   hello        rollout.rolled_back   back at revision 1",
	))
	if r.stderr != "" {
		t.Errorf("stderr %q; want none", r.stderr)
	}
	var queries []string
	for _, req := range f.requests() {
		queries = append(queries, req.Query)
	}
	want := []string{"", "after=2", "after=2&wait=30s", "after=2&wait=30s", "after=4&wait=30s"}
	if len(queries) != len(want) {
		t.Fatalf("queries %q; want %q", queries, want)
	}
	for i := range want {
		if queries[i] != want[i] {
			t.Errorf("query %d: got %q; want %q", i, queries[i], want[i])
		}
	}
}
