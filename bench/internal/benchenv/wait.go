package benchenv

import (
	"context"
	"fmt"
	"time"
)

// WaitFor calls cond every interval until it is done or fails, check
// fails (a process the benchmark runs died), or ctx ends; the error then
// says what cond last reported.
func WaitFor(ctx context.Context, what string, interval time.Duration, check func() error, cond func(context.Context) (bool, string, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	status := ""
	for {
		if err := check(); err != nil {
			return err
		}
		done, st, err := cond(ctx)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if done {
			return nil
		}
		if st != "" {
			status = st
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %s: %w", what, status, ctx.Err())
		case <-t.C:
		}
	}
}
