package benchenv

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestWaitFor(t *testing.T) {
	calls := 0
	err := WaitFor(context.Background(), "three calls", time.Millisecond, func() error { return nil },
		func(context.Context) (bool, string, error) { calls++; return calls == 3, "", nil })
	if err != nil || calls != 3 {
		t.Errorf("WaitFor = %v after %d calls; want nil after 3", err, calls)
	}

	died := errors.New("server exited")
	if err := WaitFor(context.Background(), "x", time.Millisecond, func() error { return died },
		func(context.Context) (bool, string, error) { return false, "", nil }); !errors.Is(err, died) {
		t.Errorf("with a dead process: %v; want its error", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err = WaitFor(ctx, "agents", time.Millisecond, func() error { return nil },
		func(context.Context) (bool, string, error) { return false, "7 of 10 connected", nil })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting for agents: 7 of 10 connected") {
		t.Errorf("at the deadline: %v; want what it waited for and the last status", err)
	}
}
