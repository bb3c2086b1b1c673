// Package sparselog writes warnings that a flood could repeat (a hostile
// node's reports, refused connections) at most once an interval, and counts
// the ones it drops so that the next line says how many there were.
package sparselog

import (
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Log writes at most one warning every interval and counts the ones it
// drops, to report them with the next.
type Log struct {
	log     *slog.Logger
	every   *rate.Limiter
	dropped atomic.Int64
}

// New returns a Log that writes to log at most once every interval.
func New(log *slog.Logger, every time.Duration) *Log {
	return &Log{log: log, every: rate.NewLimiter(rate.Every(every), 1)}
}

// Warn logs msg unless a warning went out less than an interval ago.
func (l *Log) Warn(msg string, args ...any) {
	if !l.every.Allow() {
		l.dropped.Add(1)
		return
	}
	if n := l.dropped.Swap(0); n > 0 {
		args = append(args, "dropped_since_last", n)
	}
	l.log.Warn(msg, args...)
}
