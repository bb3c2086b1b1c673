package cli

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
)

// logFlags are the logging flags of the daemons: server, agent and dev.
type logFlags struct {
	level  slog.Level
	format string
}

// levelValue is --log-level: debug, info, warn or error.
type levelValue struct{ v *slog.Level }

func (l levelValue) String() string {
	if l.v == nil {
		return "info"
	}
	return strings.ToLower(l.v.String())
}
func (l levelValue) Type() string { return "level" }
func (l levelValue) Set(s string) error {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("want debug, info, warn or error")
	}
	return l.v.UnmarshalText([]byte(s))
}

// formatValue is --log-format: text or json.
type formatValue struct{ p *string }

func (f formatValue) String() string {
	if f.p == nil {
		return "text"
	}
	return *f.p
}
func (f formatValue) Type() string { return "format" }
func (f formatValue) Set(s string) error {
	if s != "text" && s != "json" {
		return fmt.Errorf("want text or json")
	}
	*f.p = s
	return nil
}

func (l *logFlags) add(fs *pflag.FlagSet) {
	l.format = "text"
	fs.Var(levelValue{&l.level}, "log-level", "log level: debug, info, warn or error")
	fs.Var(formatValue{&l.format}, "log-format", "log format: text or json")
}

// logger returns a logger on w, which is stderr: stdout is for what the user
// is told.
func (l *logFlags) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: l.level}
	if l.format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
