package benchenv

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Report is a benchmark's result, printed as JSON or as a table.
type Report interface {
	WriteJSON(io.Writer) error
	WriteTable(io.Writer)
}

// Run is the body of a benchmark program's main. It parses args with
// parse, runs bench until it returns or the program gets SIGINT or
// SIGTERM, and prints the report bench returned, as JSON if asJSON says so,
// even from a failed run (it holds what was measured before the failure).
// It returns the exit status: 0, 1 when the run failed, 2 for bad flags.
func Run[C any](name string, args []string, stdout, stderr io.Writer,
	parse func([]string, io.Writer) (C, error), asJSON func(C) bool, bench func(context.Context, C) (Report, error)) int {
	cfg, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rep, err := bench(ctx, cfg)
	if rep != nil {
		if asJSON(cfg) {
			if werr := rep.WriteJSON(stdout); werr != nil {
				fmt.Fprintf(stderr, "%s: %v\n", name, werr)
				return 1
			}
		} else {
			rep.WriteTable(stdout)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}
