package sparselog

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/dockfleet/dockfleet/internal/testenv"
)

func TestCountsWhatItDrops(t *testing.T) {
	var buf testenv.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), time.Hour)
	for range 5 {
		l.Warn("over the limit", "source", "192.0.2.1")
	}
	if n := strings.Count(buf.String(), "over the limit"); n != 1 {
		t.Fatalf("5 warnings at once wrote %d lines; want 1:\n%s", n, buf.String())
	}
	l.every = rate.NewLimiter(rate.Inf, 1) // as if the interval had passed
	l.Warn("over the limit", "source", "192.0.2.1")
	if !strings.Contains(buf.String(), "dropped_since_last=4") {
		t.Errorf("the next line does not count the 4 dropped:\n%s", buf.String())
	}
}
