package server

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/client"
	"github.com/dockfleet/dockfleet/internal/testenv"
)

// TestRunEndsLongPolls: an events long poll (up to a minute) in flight
// when the server stops ends with the server, so that the shutdown does
// not wait for it until its connection is cut.
func TestRunEndsLongPolls(t *testing.T) {
	var logs testenv.Buffer
	s, tok := newTestServerConfig(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	inPoll := make(chan struct{})
	routes := s.http.Handler
	s.http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/events") {
			close(inPoll)
		}
		routes.ServeHTTP(w, r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	c, err := client.New(client.Config{Addr: s.APIURL(), Token: tok, CACertFile: s.CAFile()})
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan error, 1)
	go func() {
		_, err := c.ListEvents(context.Background(), api.DefaultProject, "", 0, time.Minute)
		polled <- err
	}()
	select {
	case <-inPoll:
	case err := <-polled:
		t.Fatalf("the long poll returned before the server stopped: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	<-polled // whatever it says: the server is gone
	if out := logs.String(); strings.Contains(out, "requests still running at shutdown") {
		t.Errorf("the shutdown waited for the long poll and cut its connection:\n%s", out)
	}
}
