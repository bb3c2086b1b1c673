package spec

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics, that it returns either
// deployments or an ErrorList of problems with lines, and that what it accepts
// survives the round trip through JSON that the server makes.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: &m {name: web, <<: *m}\n"))
	f.Add([]byte("a: &a [*a, *a]\nb: {<<: [*a]}\n"))
	f.Add([]byte(`{"apiVersion": "dockfleet.io/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"container": {"image": "a"}}}`))
	f.Add([]byte(`{"apiVersion": "dockfleet.io/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"mode": "replicated", "replicas": 3,
 "container": {"image": "a"}, "update": {"batchSize": "34%", "maxUnavailable": 1, "canary": "3", "maxFailureRatio": 0.5, "order": "start-first"}}}`))
	f.Add([]byte("apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  container: {image: a}\n" +
		"  update: {batchSize: 100%, canary: 0%, minHealthyTime: 0s, healthyDeadline: 1ns, progressDeadline: 1h, batchDelay: 0s, autoRollback: false}\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		deps, err := Parse("fuzz.yaml", data)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("Parse() error = %v (%T); want a non-empty ErrorList", err, err)
			}
			if deps != nil {
				t.Fatalf("Parse() = %v with an error; want nil", deps)
			}
			for _, e := range list {
				if e.File != "fuzz.yaml" || e.Line < 1 || e.Msg == "" {
					t.Fatalf("Parse() gave %#v; want a file, a line and a message", e)
				}
			}
			return
		}
		if len(deps) == 0 {
			t.Fatal("Parse() = no deployments and no error")
		}
		var js []byte
		for _, dep := range deps {
			b, err := json.Marshal(dep)
			if err != nil {
				t.Fatalf("json.Marshal(%+v) error: %v", dep, err)
			}
			js = append(append(append(js, "---\n"...), b...), '\n')
		}
		again, err := Parse("fuzz.json", js)
		if err != nil {
			t.Fatalf("Parse(JSON of a valid spec) error:\n%v\nJSON:\n%s", err, js)
		}
		if !reflect.DeepEqual(again, deps) {
			t.Fatalf("Parse(JSON) =\n%s\nwant\n%s", dump(again), dump(deps))
		}
	})
}
