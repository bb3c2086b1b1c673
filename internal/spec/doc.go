// Package spec is dockfleet's user-facing deployment schema: the YAML (or
// JSON) documents that `dockfleet apply` sends, parsed with line numbers,
// defaulted and validated.
//
// Parse is the only way in. It reads every document of a file, decodes each
// into a Deployment with go.yaml.in/yaml/v3's Node API (so that every problem
// knows its line), fills in the defaults, and checks every rule. Problems are
// not reported one at a time: Parse returns an ErrorList with all of them, each
// one line of the form
//
//	FILE:LINE: field.path: what is wrong
//
// The JSON form of a Deployment (its struct tags) is what the server stores
// and serves; Parse accepts that JSON too, so the output of `get -o json` or
// `get -o yaml` can be applied again unchanged.
//
// The package also holds the label rules and selector matching that node
// labels, enrollment tokens and placement share.
package spec
