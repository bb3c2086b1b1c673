package spec

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// document decodes and validates one YAML document. It remembers where each
// field was, so that later checks can point at it, and which fields were
// given at all, since some defaults apply only to absent fields.
type document struct {
	file string
	// lines holds the line of every field present, keyed by path: the line
	// of its key, or of the item in a list. "" is the document's mapping.
	lines map[string]int
	// set holds the fields present with a value other than null.
	set map[string]bool
	// bad holds the fields that could not be decoded; validation says
	// nothing more about them or what they contain.
	bad  map[string]bool
	errs ErrorList
	// budget is how many more list items and mapping pairs the decoder may
	// visit. Aliases let a small document stand for a huge one (the
	// "billion laughs"); the budget, a multiple of the document's own size,
	// stops that.
	budget int
}

// Bounds of what a spec may hold. Each list and mapping item costs the
// server memory and every targeted agent a share of its desired state,
// which travels as one message; far more than real specs use.
const (
	// MaxItems bounds each list (args, command, ports, volumes, ...) and
	// each mapping (env, labels).
	MaxItems = 1000
	// MaxString bounds each string, in bytes: a certificate in an env
	// value fits.
	MaxString = 64 << 10
)

// aliasRatio is how many times over the decoder may visit a document's nodes
// by following aliases; reusing an anchor a few times stays far below it.
const aliasRatio = 10

func newDocument(file string, root *yaml.Node) *document {
	return &document{
		file:   file,
		lines:  map[string]int{},
		set:    map[string]bool{},
		bad:    map[string]bool{},
		budget: aliasRatio*countNodes(root) + 1000,
	}
}

// countNodes counts the nodes of a document as written, aliases not followed.
func countNodes(n *yaml.Node) int {
	count := 1
	for _, c := range n.Content {
		count += countNodes(c)
	}
	return count
}

// spend takes n from the budget and reports whether there was enough. The
// first time there is not, it records why at line.
func (d *document) spend(n, line int) bool {
	if d.budget < 0 {
		return false
	}
	d.budget -= n
	if d.budget < 0 {
		d.errs = append(d.errs, FieldError{File: d.file, Line: line, Msg: "aliases expand this document too much; write the repeated parts out"})
		return false
	}
	return true
}

// failAt records a problem found while decoding the field at path.
func (d *document) failAt(line int, path, format string, args ...any) {
	d.bad[path] = true
	d.errs = append(d.errs, FieldError{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (d *document) fail(path, format string, args ...any) {
	d.failAt(d.lineOf(path), path, format, args...)
}

// errorf records a rule the decoded field at path breaks, unless the field
// or one that holds it could not be decoded: that problem is already said.
func (d *document) errorf(path, format string, args ...any) {
	for p := path; ; p = parentPath(p) {
		if d.bad[p] {
			return
		}
		if p == "" {
			break
		}
	}
	d.errs = append(d.errs, FieldError{File: d.file, Line: d.lineOf(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// lineOf is the line of the field at path or, when it is absent, of the
// nearest field that holds it.
func (d *document) lineOf(path string) int {
	for {
		if line, ok := d.lines[path]; ok {
			return line
		}
		if path == "" {
			return 1
		}
		path = parentPath(path)
	}
}

// parentPath strips the last ".name" or "[i]" from path. Map keys may hold
// dots themselves; stripping them one at a time still ends at the map.
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// fields maps the names a mapping accepts to their decoders.
type fields map[string]func(n *yaml.Node, path string)

// deployment decodes a document's root. It reports false when apiVersion or
// kind name some other schema: the rest of the document cannot be judged
// against this one, and a list of unknown fields would bury the real problem.
func (d *document) deployment(root *yaml.Node) (Deployment, bool) {
	var dep Deployment
	var metadata, spec *yaml.Node
	d.lines[""] = root.Line
	d.mapping(root, "", fields{
		"apiVersion": func(n *yaml.Node, p string) { dep.APIVersion = d.str(n, p) },
		"kind":       func(n *yaml.Node, p string) { dep.Kind = d.str(n, p) },
		"metadata":   func(n *yaml.Node, _ string) { metadata = n },
		"spec":       func(n *yaml.Node, _ string) { spec = n },
	})
	if d.bad[""] {
		return dep, false
	}
	ok := true
	switch {
	case d.bad["apiVersion"]:
		ok = false
	case !d.set["apiVersion"]:
		d.errorf("apiVersion", "is required; use %q", APIVersion)
	case dep.APIVersion != APIVersion:
		d.errorf("apiVersion", "%s is not supported; use %q", quote(dep.APIVersion), APIVersion)
		ok = false
	}
	switch {
	case d.bad["kind"]:
		ok = false
	case !d.set["kind"]:
		d.errorf("kind", "is required; use %q", KindDeployment)
	case dep.Kind != KindDeployment:
		d.errorf("kind", "%s is not supported; use %q", quote(dep.Kind), KindDeployment)
		ok = false
	}
	if !ok {
		return dep, false
	}
	if metadata != nil {
		d.mapping(metadata, "metadata", fields{
			"name":    func(n *yaml.Node, p string) { dep.Metadata.Name = d.str(n, p) },
			"project": func(n *yaml.Node, p string) { dep.Metadata.Project = d.str(n, p) },
			"labels":  func(n *yaml.Node, p string) { dep.Metadata.Labels = d.strMap(n, p) },
		})
	}
	if spec != nil {
		d.spec(spec, "spec", &dep.Spec)
	}
	// A document cut short by the alias budget is not worth validating.
	return dep, d.budget >= 0
}

func (d *document) spec(n *yaml.Node, path string, s *DeploymentSpec) {
	d.mapping(n, path, fields{
		"mode":     func(n *yaml.Node, p string) { s.Mode = Mode(d.str(n, p)) },
		"replicas": func(n *yaml.Node, p string) { s.Replicas = d.integer(n, p) },
		"selector": func(n *yaml.Node, p string) {
			d.mapping(n, p, fields{
				"matchLabels": func(n *yaml.Node, p string) { s.Selector.MatchLabels = d.strMap(n, p) },
				"matchExpressions": func(n *yaml.Node, p string) {
					s.Selector.MatchExpressions = d.requirements(n, p)
				},
			})
		},
		"container": func(n *yaml.Node, p string) { d.container(n, p, &s.Container) },
		"update":    func(n *yaml.Node, p string) { d.update(n, p, &s.Update) },
		"imagePolicy": func(n *yaml.Node, p string) {
			s.ImagePolicy = ImagePolicy(d.str(n, p))
		},
	})
}

func (d *document) update(n *yaml.Node, path string, u *Update) {
	d.mapping(n, path, fields{
		"batchSize":        func(n *yaml.Node, p string) { u.BatchSize = d.intOrPercent(n, p) },
		"maxUnavailable":   func(n *yaml.Node, p string) { u.MaxUnavailable = d.intOrPercent(n, p) },
		"canary":           func(n *yaml.Node, p string) { u.Canary = d.intOrPercent(n, p) },
		"autoPromote":      func(n *yaml.Node, p string) { u.AutoPromote = d.boolean(n, p) },
		"minHealthyTime":   func(n *yaml.Node, p string) { u.MinHealthyTime = d.duration(n, p) },
		"healthyDeadline":  func(n *yaml.Node, p string) { u.HealthyDeadline = d.duration(n, p) },
		"progressDeadline": func(n *yaml.Node, p string) { u.ProgressDeadline = d.duration(n, p) },
		"batchDelay":       func(n *yaml.Node, p string) { u.BatchDelay = d.duration(n, p) },
		"maxFailureRatio":  func(n *yaml.Node, p string) { u.MaxFailureRatio = d.float(n, p) },
		"autoRollback":     func(n *yaml.Node, p string) { u.AutoRollback = d.boolean(n, p) },
		"order":            func(n *yaml.Node, p string) { u.Order = Order(d.str(n, p)) },
		"prePull":          func(n *yaml.Node, p string) { u.PrePull = d.boolean(n, p) },
	})
}

func (d *document) requirements(n *yaml.Node, path string) []Requirement {
	var reqs []Requirement
	d.list(n, path, func(n *yaml.Node, p string) {
		var r Requirement
		d.mapping(n, p, fields{
			"key":      func(n *yaml.Node, p string) { r.Key = d.str(n, p) },
			"operator": func(n *yaml.Node, p string) { r.Operator = Operator(d.str(n, p)) },
			"values":   func(n *yaml.Node, p string) { r.Values = d.strList(n, p) },
		})
		reqs = append(reqs, r)
	})
	return reqs
}

func (d *document) container(n *yaml.Node, path string, c *Container) {
	d.mapping(n, path, fields{
		"image":   func(n *yaml.Node, p string) { c.Image = d.str(n, p) },
		"command": func(n *yaml.Node, p string) { c.Command = d.strList(n, p) },
		"args":    func(n *yaml.Node, p string) { c.Args = d.strList(n, p) },
		"env":     func(n *yaml.Node, p string) { c.Env = d.strMap(n, p) },
		"ports": func(n *yaml.Node, p string) {
			d.list(n, p, func(n *yaml.Node, p string) {
				var pt Port
				d.mapping(n, p, fields{
					"containerPort": func(n *yaml.Node, p string) { pt.ContainerPort = d.integer(n, p) },
					"hostPort":      func(n *yaml.Node, p string) { pt.HostPort = d.integer(n, p) },
					"hostIP":        func(n *yaml.Node, p string) { pt.HostIP = d.str(n, p) },
					"protocol":      func(n *yaml.Node, p string) { pt.Protocol = d.str(n, p) },
				})
				c.Ports = append(c.Ports, pt)
			})
		},
		"volumes": func(n *yaml.Node, p string) {
			d.list(n, p, func(n *yaml.Node, p string) {
				var v Volume
				d.mapping(n, p, fields{
					"type":     func(n *yaml.Node, p string) { v.Type = VolumeType(d.str(n, p)) },
					"source":   func(n *yaml.Node, p string) { v.Source = d.str(n, p) },
					"target":   func(n *yaml.Node, p string) { v.Target = d.str(n, p) },
					"readOnly": func(n *yaml.Node, p string) { v.ReadOnly = d.boolean(n, p) },
				})
				c.Volumes = append(c.Volumes, v)
			})
		},
		"resources": func(n *yaml.Node, p string) {
			d.mapping(n, p, fields{
				"cpus":   func(n *yaml.Node, p string) { c.Resources.CPUs = d.float(n, p) },
				"memory": func(n *yaml.Node, p string) { c.Resources.Memory = d.byteSize(n, p) },
			})
		},
		"restartPolicy": func(n *yaml.Node, p string) { c.RestartPolicy = RestartPolicy(d.str(n, p)) },
		"healthCheck": func(n *yaml.Node, p string) {
			c.HealthCheck = &HealthCheck{}
			d.healthCheck(n, p, c.HealthCheck)
		},
		"labels": func(n *yaml.Node, p string) { c.Labels = d.strMap(n, p) },
	})
}

func (d *document) healthCheck(n *yaml.Node, path string, hc *HealthCheck) {
	d.mapping(n, path, fields{
		"http": func(n *yaml.Node, p string) {
			hc.HTTP = &HTTPCheck{}
			d.mapping(n, p, fields{
				"path": func(n *yaml.Node, p string) { hc.HTTP.Path = d.str(n, p) },
				"port": func(n *yaml.Node, p string) { hc.HTTP.Port = d.integer(n, p) },
			})
		},
		"tcp": func(n *yaml.Node, p string) {
			hc.TCP = &TCPCheck{}
			d.mapping(n, p, fields{
				"port": func(n *yaml.Node, p string) { hc.TCP.Port = d.integer(n, p) },
			})
		},
		"exec": func(n *yaml.Node, p string) {
			hc.Exec = &ExecCheck{}
			d.mapping(n, p, fields{
				"command": func(n *yaml.Node, p string) { hc.Exec.Command = d.strList(n, p) },
			})
		},
		"interval":    func(n *yaml.Node, p string) { hc.Interval = d.duration(n, p) },
		"timeout":     func(n *yaml.Node, p string) { hc.Timeout = d.duration(n, p) },
		"retries":     func(n *yaml.Node, p string) { hc.Retries = d.integer(n, p) },
		"startPeriod": func(n *yaml.Node, p string) { hc.StartPeriod = d.duration(n, p) },
	})
}

// mapping decodes a mapping whose keys are the names in fs. A null value is
// taken as an absent field, as in Kubernetes.
func (d *document) mapping(n *yaml.Node, path string, fs fields) {
	d.pairs(n, path, func(key string, keyLine int, v *yaml.Node, p string) {
		decode, ok := fs[key]
		if !ok {
			d.failAt(keyLine, p, "unknown field%s", suggest(key, fs))
			return
		}
		d.lines[p] = keyLine
		if isNull(v) {
			return
		}
		d.set[p] = true
		decode(v, p)
	})
}

// strMap decodes a mapping of names to strings, like env or labels. A null
// value is the empty string.
func (d *document) strMap(n *yaml.Node, path string) map[string]string {
	m := map[string]string{}
	d.pairs(n, path, func(key string, keyLine int, v *yaml.Node, p string) {
		d.lines[p] = keyLine
		if isNull(v) {
			m[key] = ""
			return
		}
		d.set[p] = true
		m[key] = d.str(v, p)
	})
	if len(m) == 0 {
		return nil
	}
	return m
}

// pairs calls fn with every key and value of the mapping n, merge keys ("<<")
// expanded, after checking that n is a mapping and no key is given twice.
func (d *document) pairs(n *yaml.Node, path string, fn func(key string, keyLine int, v *yaml.Node, p string)) {
	if n.Kind != yaml.MappingNode {
		d.typeError(n, path, "a mapping")
		return
	}
	if !d.fewItems(len(n.Content)/2, path) {
		return
	}
	kvs := d.expand(n, path, map[*yaml.Node]bool{})
	if !d.fewItems(len(kvs), path) { // with what merge keys brought in
		return
	}
	seen := map[string]int{}
	for _, kv := range kvs {
		key := kv.key.Value
		p := join(path, key)
		if first, dup := seen[key]; dup {
			if !kv.merged {
				d.failAt(kv.key.Line, p, "duplicate key; it is first given at line %d", first)
			}
			continue
		}
		seen[key] = kv.key.Line
		fn(key, kv.key.Line, resolve(kv.value), p)
	}
}

type pair struct {
	key, value *yaml.Node
	// merged is true for pairs that a merge key brought in; the mapping's
	// own keys override them.
	merged bool
}

// expand lists the pairs of mapping n: its own first, then those its merge
// keys bring in, which YAML lets the mapping's own keys override. visiting
// guards against a mapping that merges itself.
func (d *document) expand(n *yaml.Node, path string, visiting map[*yaml.Node]bool) []pair {
	visiting[n] = true
	defer delete(visiting, n)
	var own, merged []pair
	if !d.spend(len(n.Content)/2, n.Line) {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode:
			d.failAt(k.Line, path, "got %s as a key; keys must be strings", describe(k))
		case k.ShortTag() == "!!merge":
			merged = append(merged, d.merge(resolve(v), k.Line, path, visiting)...)
		default:
			own = append(own, pair{key: k, value: v})
		}
	}
	return append(own, merged...)
}

// merge lists the pairs a merge key's value brings in: one mapping, or a list
// of them where the earlier ones win. line is the merge key's.
func (d *document) merge(v *yaml.Node, line int, path string, visiting map[*yaml.Node]bool) []pair {
	var sources []*yaml.Node
	switch v.Kind {
	case yaml.MappingNode:
		sources = []*yaml.Node{v}
	case yaml.SequenceNode:
		for _, s := range v.Content {
			sources = append(sources, resolve(s))
		}
	}
	var pairs []pair
	for _, s := range sources {
		if s.Kind != yaml.MappingNode {
			d.failAt(line, path, "got %s to merge (<<); want a mapping or a list of mappings", describe(s))
			continue
		}
		if visiting[s] {
			d.failAt(line, path, "a merge (<<) includes the mapping it is in")
			continue
		}
		for _, kv := range d.expand(s, path, visiting) {
			kv.merged = true
			pairs = append(pairs, kv)
		}
	}
	return pairs
}

// list decodes each item of a sequence with item.
func (d *document) list(n *yaml.Node, path string, item func(n *yaml.Node, path string)) {
	if n.Kind != yaml.SequenceNode {
		d.typeError(n, path, "a list")
		return
	}
	if !d.fewItems(len(n.Content), path) || !d.spend(len(n.Content), n.Line) {
		return
	}
	for i, c := range n.Content {
		p := index(path, i)
		d.lines[p] = c.Line
		d.set[p] = true
		item(resolve(c), p)
	}
}

// fewItems reports whether the list or mapping at path, of count items,
// has at most MaxItems, and records the problem when it has more.
func (d *document) fewItems(count int, path string) bool {
	if count <= MaxItems {
		return true
	}
	d.fail(path, "has %d items; at most %d are allowed", count, MaxItems)
	return false
}

func (d *document) strList(n *yaml.Node, path string) []string {
	var l []string
	d.list(n, path, func(n *yaml.Node, p string) { l = append(l, d.str(n, p)) })
	return l
}

// str decodes a string. Numbers and booleans are taken as written, so that
// `PORT: 8080` in env or `version: 1.10` in labels mean what they say.
func (d *document) str(n *yaml.Node, path string) string {
	switch n.ShortTag() {
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
	default:
		d.typeError(n, path, "a string")
		return ""
	}
	switch {
	case !utf8.ValidString(n.Value):
		d.fail(path, "is not valid UTF-8")
		return ""
	case strings.ContainsRune(n.Value, 0):
		d.fail(path, "contains a NUL character")
		return ""
	case len(n.Value) > MaxString:
		d.fail(path, "is %d bytes long; at most %d are allowed", len(n.Value), MaxString)
		return ""
	}
	return n.Value
}

func (d *document) integer(n *yaml.Node, path string) int {
	if n.ShortTag() != "!!int" {
		d.typeError(n, path, "an integer")
		return 0
	}
	var v int
	if err := n.Decode(&v); err != nil {
		d.fail(path, "%s is out of range", n.Value)
		return 0
	}
	return v
}

func (d *document) float(n *yaml.Node, path string) float64 {
	if tag := n.ShortTag(); tag != "!!int" && tag != "!!float" {
		d.typeError(n, path, "a number")
		return 0
	}
	var v float64
	if err := n.Decode(&v); err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		d.fail(path, "got %s; want a finite number", n.Value)
		return 0
	}
	return v
}

func (d *document) boolean(n *yaml.Node, path string) bool {
	if n.ShortTag() != "!!bool" {
		d.typeError(n, path, "true or false")
		return false
	}
	var v bool
	if err := n.Decode(&v); err != nil {
		d.typeError(n, path, "true or false")
	}
	return v
}

func (d *document) duration(n *yaml.Node, path string) Duration {
	s := d.str(n, path)
	if d.bad[path] {
		return 0
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		d.fail(path, "%s is not a duration; write a number with a unit, like \"5s\" or \"1m30s\"", quote(s))
		return 0
	}
	return Duration(v)
}

// intOrPercent decodes a count, written as an integer or a string of digits,
// or a percentage written as a string like "25%". Whether the value is in
// range is for validation to say, which knows the field's bounds.
func (d *document) intOrPercent(n *yaml.Node, path string) IntOrPercent {
	switch n.ShortTag() {
	case "!!int":
		return IntOrPercent{Value: d.integer(n, path)}
	case "!!str":
	default:
		d.typeError(n, path, "a count like 2 or a percentage like \"25%\"")
		return IntOrPercent{}
	}
	s := d.str(n, path)
	if d.bad[path] {
		return IntOrPercent{}
	}
	v, err := ParseIntOrPercent(s)
	if err != nil {
		d.fail(path, "%v", err)
		return IntOrPercent{}
	}
	return v
}

func (d *document) byteSize(n *yaml.Node, path string) ByteSize {
	s := d.str(n, path)
	if d.bad[path] {
		return 0
	}
	v, err := ParseByteSize(s)
	if err != nil {
		d.fail(path, "%v", err)
		return 0
	}
	return v
}

// typeError reports a value of the wrong YAML type.
func (d *document) typeError(n *yaml.Node, path, want string) {
	if path == "" {
		want += " with apiVersion, kind, metadata and spec"
	}
	d.failAt(n.Line, path, "got %s; want %s", describe(n), want)
}

// describe names a node's type, and its value when it is a scalar, for a
// message saying it is not what was expected.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch tag := n.ShortTag(); tag {
	case "!!str":
		return "the string " + quote(n.Value)
	case "!!int":
		return "the integer " + n.Value
	case "!!float":
		return "the number " + n.Value
	case "!!bool":
		return "the boolean " + n.Value
	case "!!null":
		return "null"
	default:
		return fmt.Sprintf("a %s value", tag)
	}
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// suggest helps with a misspelt field: the closest accepted name, or the list
// of them when none is close.
func suggest(key string, fs fields) string {
	names := make([]string, 0, len(fs))
	for name := range fs {
		names = append(names, name)
	}
	slices.Sort(names)
	best, bestDist := "", 3
	for _, name := range names {
		if fold(name) == fold(key) {
			return fmt.Sprintf("; did you mean %s?", name)
		}
		if dist := editDistance(key, name); dist < bestDist && dist < len(name)/2 {
			best, bestDist = name, dist
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %s?", best)
	}
	return "; accepted fields are " + strings.Join(names, ", ")
}

// fold makes "host_ip", "host-ip" and "HostIP" compare equal.
func fold(s string) string {
	return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(s))
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
