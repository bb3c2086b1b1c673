package benchenv

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

type fakeReport struct{}

func (fakeReport) WriteJSON(w io.Writer) error { _, err := io.WriteString(w, "{}\n"); return err }
func (fakeReport) WriteTable(w io.Writer)      { io.WriteString(w, "table\n") }

func TestRun(t *testing.T) {
	parse := func(args []string, _ io.Writer) (string, error) {
		if len(args) > 0 && args[0] == "-bad" {
			return "", errors.New("-bad: no such flag")
		}
		return strings.Join(args, ""), nil
	}
	asJSON := func(c string) bool { return c == "json" }
	for _, tt := range []struct {
		args     []string
		err      error
		report   Report
		code     int
		out, log string
	}{
		{args: []string{"-bad"}, code: 2, log: "x: -bad: no such flag"},
		{report: fakeReport{}, code: 0, out: "table"},
		{args: []string{"json"}, report: fakeReport{}, code: 0, out: "{}"},
		{report: fakeReport{}, err: errors.New("server exited"), code: 1, out: "table", log: "x: server exited"},
		{err: errors.New("no binary"), code: 1, log: "x: no binary"},
	} {
		var out, log bytes.Buffer
		code := Run("x", tt.args, &out, &log, parse, asJSON, func(context.Context, string) (Report, error) { return tt.report, tt.err })
		if code != tt.code || strings.TrimSpace(out.String()) != tt.out || strings.TrimSpace(log.String()) != tt.log {
			t.Errorf("Run(%q) = %d, printed %q, logged %q; want %d, %q, %q", tt.args, code, out.String(), log.String(), tt.code, tt.out, tt.log)
		}
	}
}
