package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Parse reads every Deployment document of one YAML (or JSON) file, fills in
// the defaults and validates them. Documents are separated by "---"; empty
// ones are skipped, but a file without any is an error. filename only names
// the file in error messages.
//
// The error, when there is one, is an ErrorList with every problem of every
// document, and the deployments are nil: a file is applied whole or not at all.
func Parse(filename string, data []byte) ([]Deployment, error) {
	return ParseIn(filename, data, "")
}

// ParseIn is Parse for an apply to one project (the CLI's --project): a
// document naming no project is in it, and one naming another is an error.
// An empty project is Parse's default.
func ParseIn(filename string, data []byte, project string) ([]Deployment, error) {
	if e, bad := checkText(filename, data); bad {
		return nil, ErrorList{e}
	}
	var (
		deps []Deployment
		errs ErrorList
		// names maps project/name to the line of the first deployment with it.
		names = map[string]int{}
	)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, syntaxError(filename, data, err))
			break
		}
		if len(n.Content) == 0 || isNull(n.Content[0]) {
			continue
		}
		d := newDocument(filename, n.Content[0])
		dep, ok := d.deployment(n.Content[0])
		if ok {
			switch p := dep.Metadata.Project; {
			case project == "" || p == project:
			case p == "":
				dep.Metadata.Project = project
			default:
				d.errorf("metadata.project", "the deployment is in project %s, but this apply is to project %s (--project); drop one of the two",
					quote(p), quote(project))
			}
			d.applyDefaults(&dep)
			d.validate(&dep)
			if len(d.errs) == 0 {
				key := dep.Metadata.Project + "/" + dep.Metadata.Name
				if first, dup := names[key]; dup {
					d.errorf("metadata.name", "deployment %s is already defined at line %d", quote(key), first)
				} else {
					names[key] = d.lineOf("metadata.name")
				}
			}
		}
		errs = append(errs, d.errs...)
		deps = append(deps, dep)
	}
	if len(deps) == 0 && len(errs) == 0 {
		errs = append(errs, FieldError{File: filename, Line: 1, Msg: "the file has no documents; want at least one Deployment"})
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b FieldError) int { return a.Line - b.Line })
		return nil, errs
	}
	return deps, nil
}

// checkText finds what the YAML reader would reject without saying on which
// line: bytes that are not UTF-8 and characters YAML does not allow.
func checkText(filename string, data []byte) (FieldError, bool) {
	line := 1
	for i := 0; i < len(data); {
		c, size := utf8.DecodeRune(data[i:])
		var msg string
		switch {
		case c == utf8.RuneError && size == 1:
			msg = fmt.Sprintf("byte 0x%02x is not UTF-8; save the file as UTF-8", data[i])
		case !yamlPrintable(c):
			msg = fmt.Sprintf("character %U is not allowed in YAML", c)
		}
		if msg != "" {
			return FieldError{File: filename, Line: line, Msg: msg}, true
		}
		if c == '\n' {
			line++
		}
		i += size
	}
	return FieldError{}, false
}

// yamlPrintable reports whether YAML 1.2 allows c in a stream (its
// c-printable production), as go.yaml.in/yaml/v3's reader checks.
func yamlPrintable(c rune) bool {
	return c == '\t' || c == '\n' || c == '\r' || c >= 0x20 && c <= 0x7e || c == 0x85 ||
		c >= 0xa0 && c <= 0xd7ff || c >= 0xe000 && c <= 0xfffd || c >= 0x10000 && c <= 0x10ffff
}

var (
	yamlLineError = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	unknownAnchor = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)
)

// parserProblems are the messages of yaml/v3's parser (as opposed to its
// scanner). The parser reports the 0-based line of its mark where the scanner
// reports a 1-based one, so their lines need one more.
var parserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"found undefined tag handle":             true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

// syntaxError turns a YAML syntax error into a FieldError with a line.
// yaml/v3 leaves the line out when it is the first one.
func syntaxError(filename string, data []byte, err error) FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineError.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else if m := unknownAnchor.FindStringSubmatch(err.Error()); m != nil {
		line = aliasLine(data, m[1])
	}
	if parserProblems[msg] {
		line++
	}
	return FieldError{File: filename, Line: max(line, 1), Msg: "invalid YAML: " + msg}
}

// aliasLine finds the line of the first alias *name in data; yaml/v3 does not
// say where an alias to an unknown anchor is.
func aliasLine(data []byte, name string) int {
	alias := "*" + name
	for i := 0; ; {
		j := bytes.Index(data[i:], []byte(alias))
		if j < 0 {
			return 1
		}
		end := i + j + len(alias)
		if end == len(data) || strings.IndexByte(" \t\r\n,]}", data[end]) >= 0 {
			return 1 + bytes.Count(data[:i+j], []byte("\n"))
		}
		i = end
	}
}
