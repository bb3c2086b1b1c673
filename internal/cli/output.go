package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/dockfleet/dockfleet/internal/spec"
	"github.com/dockfleet/dockfleet/internal/termtext"
)

// outputFormat is the value of -o: a table for people, JSON or YAML for
// scripts.
type outputFormat string

const (
	outputTable outputFormat = "table"
	outputJSON  outputFormat = "json"
	outputYAML  outputFormat = "yaml"
)

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "format" }

// Set accepts table, json or yaml; anything else is a flag error, so a usage
// error.
func (o *outputFormat) Set(s string) error {
	switch f := outputFormat(s); f {
	case outputTable, outputJSON, outputYAML:
		*o = f
		return nil
	}
	return fmt.Errorf("want table, json or yaml")
}

// addOutputFlag adds -o/--output to fs.
func addOutputFlag(fs *pflag.FlagSet, o *outputFormat) {
	*o = outputTable
	fs.VarP(o, "output", "o", "output format: table, json or yaml")
}

// render writes v as JSON or YAML, or calls table for the table form.
func render(w io.Writer, format outputFormat, v any, table func() error) error {
	switch format {
	case outputJSON:
		return writeJSON(w, v)
	case outputYAML:
		return writeYAML(w, v)
	}
	return table()
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// writeYAML writes v's JSON form as YAML, so that field names and order are
// the JSON ones, and what a script reads does not depend on the format.
func writeYAML(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("converting JSON to YAML: %w", err)
	}
	blockStyle(&doc)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// blockStyle clears the flow and quoting styles JSON's syntax gave n, so the
// encoder writes block YAML and quotes only strings that need it.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// table writes aligned columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)}
	t.row(headers...)
	return t
}

// row writes one line of cells.
func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = cell(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// cell is s as one cell of a table: tabs and newlines, which would break
// the columns, become spaces, and other control characters are escaped.
func cell(s string) string {
	return printable(strings.NewReplacer("\t", " ", "\n", " ").Replace(s))
}

// printable escapes the control characters in s: what the CLI prints
// includes strings that nodes reported (termtext says why).
func printable(s string) string {
	e, _ := termtext.Escape(s, 0)
	return e
}

func (t *table) flush() error {
	if err := t.tw.Flush(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// orDash writes an empty cell as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatLabels writes labels as "k=v,k2=v2", sorted by key, or "-".
func formatLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(labels)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + labels[k])
	}
	return b.String()
}

// age writes a duration the short way tables do: "45s", "12m", "3h", "5d".
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// ago writes how long ago t was, "3s ago", or "never" for the zero time.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return age(now.Sub(t)) + " ago"
}

// since writes t's age for an AGE column, or "-" for the zero time.
func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return age(now.Sub(t))
}

// timestamp writes t with its age, "2026-01-02T03:04:05Z (5m ago)".
func timestamp(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339) + " (" + ago(t, now) + ")"
}

// formatBytes writes a size with binary units: "512Mi", "7.7Gi".
func formatBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d", n)
	}
	units := []string{"Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	v := float64(n) / 1024
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v >= 10 || v == float64(int64(v)) {
		return fmt.Sprintf("%.0f%s", v, units[i])
	}
	return fmt.Sprintf("%.1f%s", v, units[i])
}

// labelsValue is a --labels flag, "k=v,k2=v2", checked as node labels.
type labelsValue struct {
	labels map[string]string
	text   string
}

func (l *labelsValue) String() string { return l.text }
func (l *labelsValue) Type() string   { return "k=v,..." }

func (l *labelsValue) Set(s string) error {
	m, err := spec.ParseLabels(s)
	if err != nil {
		return err
	}
	l.labels, l.text = m, s
	return nil
}

// shortID cuts a container ID to the 12 characters Docker shows.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return orDash(id)
}
