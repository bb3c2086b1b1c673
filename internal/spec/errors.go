package spec

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one problem in a spec file: where it is and what is wrong.
type FieldError struct {
	File string `json:"file"`
	// Line is 1-based. A missing field points at the line of the mapping
	// that should hold it.
	Line int `json:"line"`
	// Path is the field's path with the YAML names, like
	// spec.container.ports[0].containerPort; map keys are appended as .key.
	// It is empty for problems with the file itself, like YAML syntax.
	Path string `json:"path,omitempty"`
	Msg  string `json:"message"`
}

func (e FieldError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Path, e.Msg)
}

// ErrorList is every problem Parse found in a file, in the order of their
// lines. Parse never returns an empty one.
type ErrorList []FieldError

// Error joins the problems, one per line.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// plain is l as one error without file and line (for values that came
// from no file), nil if l is empty.
func (l ErrorList) plain() error {
	if len(l) == 0 {
		return nil
	}
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Path + ": " + e.Msg
	}
	return errors.New(strings.Join(msgs, "; "))
}
