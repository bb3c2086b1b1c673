package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/fakert"
)

// TestValidateNamesTheFlag checks that DefaultConfig, given what only the
// operator knows, is valid, and that each invalid field is refused with
// ErrInvalidConfig and an error naming its flag or field.
func TestValidateNamesTheFlag(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.Server, c.DataDir, c.Runtime = "10.0.0.5:7401", t.TempDir(), fakert.New()
		return c
	}
	if c := valid(); c.Validate() != nil {
		t.Fatalf("DefaultConfig with a server, data dir and runtime: %v; want valid", c.Validate())
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"no server", func(c *Config) { c.Server = "" }, "--server is required"},
		{"server without port", func(c *Config) { c.Server = "10.0.0.5" }, `--server "10.0.0.5" must name a host and port`},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "--data-dir is required"},
		{"no runtime", func(c *Config) { c.Runtime = nil }, "Config.Runtime is nil"},
		{"zero resync", func(c *Config) { c.ResyncInterval = 0 }, "--resync must be above zero"},
		{"negative backoff", func(c *Config) { c.MaxBackoff = -1 }, "Config.MaxBackoff must be above zero"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.change(&c)
			err := c.Validate()
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v; want ErrInvalidConfig saying %q", err, tt.want)
			}
			if _, nerr := New(c); !errors.Is(nerr, ErrInvalidConfig) {
				t.Errorf("New: got %v; want Validate's error", nerr)
			}
		})
	}
}
