package spec

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// defaultUpdate is the update block of a spec without one.
var defaultUpdate = Update{
	BatchSize:        IntOrPercent{Value: 25, Percent: true},
	MaxUnavailable:   IntOrPercent{Value: 25, Percent: true},
	MinHealthyTime:   Duration(10 * time.Second),
	HealthyDeadline:  Duration(5 * time.Minute),
	ProgressDeadline: Duration(10 * time.Minute),
	AutoRollback:     true,
	Order:            OrderStopFirst,
}

// defaulted is the container of a minimal spec after defaults.
func defaulted(image string) Container {
	return Container{Image: image, RestartPolicy: RestartAlways}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []Deployment
	}{
		{
			name: "global with defaults",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: node-exporter
spec:
  container:
    image: prom/node-exporter:v1.8.0
    ports:
      - containerPort: 9100
    healthCheck:
      http:
        port: 9100
`,
			want: []Deployment{{
				APIVersion: APIVersion, Kind: KindDeployment,
				Metadata: Metadata{Name: "node-exporter", Project: "default"},
				Spec: DeploymentSpec{
					Mode:   ModeGlobal,
					Update: defaultUpdate,
					Container: Container{
						Image:         "prom/node-exporter:v1.8.0",
						Ports:         []Port{{ContainerPort: 9100, Protocol: "tcp"}},
						RestartPolicy: RestartAlways,
						HealthCheck: &HealthCheck{
							HTTP:     &HTTPCheck{Path: "/", Port: 9100},
							Interval: Duration(10 * time.Second), Timeout: Duration(2 * time.Second), Retries: 3,
						},
					},
				},
			}},
		},
		{
			name: "a short interval brings the default timeout down",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: hello:v1
    healthCheck:
      tcp: {port: 8080}
      interval: 500ms
`,
			want: []Deployment{{
				APIVersion: APIVersion, Kind: KindDeployment,
				Metadata: Metadata{Name: "web", Project: "default"},
				Spec: DeploymentSpec{
					Mode:   ModeGlobal,
					Update: defaultUpdate,
					Container: Container{
						Image:         "hello:v1",
						RestartPolicy: RestartAlways,
						HealthCheck: &HealthCheck{
							TCP:      &TCPCheck{Port: 8080},
							Interval: Duration(500 * time.Millisecond), Timeout: Duration(500 * time.Millisecond), Retries: 3,
						},
					},
				},
			}},
		},
		{
			name: "replicated defaults to one replica",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: replicated
  container: {image: nginx}
`,
			want: []Deployment{{
				APIVersion: APIVersion, Kind: KindDeployment,
				Metadata: Metadata{Name: "web", Project: "default"},
				Spec:     DeploymentSpec{Mode: ModeReplicated, Replicas: 1, Container: defaulted("nginx"), Update: defaultUpdate},
			}},
		},
		{
			name: "replicated scaled to zero stays at zero",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: replicated
  replicas: 0
  container: {image: nginx}
`,
			want: []Deployment{{
				APIVersion: APIVersion, Kind: KindDeployment,
				Metadata: Metadata{Name: "web", Project: "default"},
				Spec:     DeploymentSpec{Mode: ModeReplicated, Container: defaulted("nginx"), Update: defaultUpdate},
			}},
		},
		{
			name: "several documents, empty ones skipped",
			yaml: `---
# the first document is empty
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec: {container: {image: nginx}}
---
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web, project: staging}
spec: {mode: replicated, replicas: 2, container: {image: "nginx:1.27"}}
...
`,
			want: []Deployment{
				{
					APIVersion: APIVersion, Kind: KindDeployment,
					Metadata: Metadata{Name: "web", Project: "default"},
					Spec:     DeploymentSpec{Mode: ModeGlobal, Container: defaulted("nginx"), Update: defaultUpdate},
				},
				{
					APIVersion: APIVersion, Kind: KindDeployment,
					Metadata: Metadata{Name: "web", Project: "staging"},
					Spec:     DeploymentSpec{Mode: ModeReplicated, Replicas: 2, Container: defaulted("nginx:1.27"), Update: defaultUpdate},
				},
			},
		},
		{
			name: "scalars as strings, nulls as absent, anchors and merge keys",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
  project: ~
  labels: &labels
    version: 1.10
    canary: true
    empty:
spec:
  mode:
  selector:
    matchLabels: *labels
  container:
    <<: &base
      image: nginx
      restartPolicy: never
    restartPolicy: on-failure
    env: {PORT: 8080, DEBUG: false}
    healthCheck: null
`,
			want: []Deployment{{
				APIVersion: APIVersion, Kind: KindDeployment,
				Metadata: Metadata{Name: "web", Project: "default", Labels: map[string]string{"version": "1.10", "canary": "true", "empty": ""}},
				Spec: DeploymentSpec{
					Mode:     ModeGlobal,
					Update:   defaultUpdate,
					Selector: Selector{MatchLabels: map[string]string{"version": "1.10", "canary": "true", "empty": ""}},
					Container: Container{
						Image:         "nginx",
						Env:           map[string]string{"PORT": "8080", "DEBUG": "false"},
						RestartPolicy: RestartOnFailure,
					},
				},
			}},
		},
		{
			name: "JSON",
			yaml: `{"apiVersion": "dockfleet.io/v1", "kind": "Deployment", "metadata": {"name": "web"},
 "spec": {"container": {"image": "nginx", "resources": {"cpus": 1, "memory": 8388608}}}}`,
			want: []Deployment{{
				APIVersion: APIVersion, Kind: KindDeployment,
				Metadata: Metadata{Name: "web", Project: "default"},
				Spec: DeploymentSpec{Mode: ModeGlobal, Update: defaultUpdate, Container: Container{
					Image: "nginx", Resources: Resources{CPUs: 1, Memory: 8 << 20}, RestartPolicy: RestartAlways,
				}},
			}},
		},
		{
			name: "update: maxUnavailable follows batchSize as given",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: replicated
  replicas: 6
  container: {image: nginx}
  update:
    batchSize: 2
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
    batchSize: 50%
    maxUnavailable: ~
`,
			want: []Deployment{
				{
					APIVersion: APIVersion, Kind: KindDeployment,
					Metadata: Metadata{Name: "web", Project: "default"},
					Spec: DeploymentSpec{Mode: ModeReplicated, Replicas: 6, Container: defaulted("nginx"), Update: Update{
						BatchSize:        IntOrPercent{Value: 2},
						MaxUnavailable:   IntOrPercent{Value: 2},
						MinHealthyTime:   Duration(10 * time.Second),
						HealthyDeadline:  Duration(5 * time.Minute),
						ProgressDeadline: Duration(10 * time.Minute),
						AutoRollback:     true,
						Order:            OrderStopFirst,
					}},
				},
				{
					APIVersion: APIVersion, Kind: KindDeployment,
					Metadata: Metadata{Name: "api", Project: "default"},
					Spec: DeploymentSpec{Mode: ModeGlobal, Container: defaulted("nginx"), Update: Update{
						BatchSize:        IntOrPercent{Value: 50, Percent: true},
						MaxUnavailable:   IntOrPercent{Value: 50, Percent: true},
						MinHealthyTime:   Duration(10 * time.Second),
						HealthyDeadline:  Duration(5 * time.Minute),
						ProgressDeadline: Duration(10 * time.Minute),
						AutoRollback:     true,
						Order:            OrderStopFirst,
					}},
				},
			},
		},
		{
			name: "update: every field given, none overwritten by a default",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: replicated
  replicas: 4
  container:
    image: nginx
    ports:
      - containerPort: 80
  update:
    batchSize: "3"
    maxUnavailable: 100%
    canary: 4
    autoPromote: true
    minHealthyTime: 0s
    healthyDeadline: 1m
    progressDeadline: 1m
    maxFailureRatio: 1
    autoRollback: false
    order: start-first
    prePull: true
    batchDelay: 1m30s
  imagePolicy: resolveOnServer
`,
			want: []Deployment{{
				APIVersion: APIVersion, Kind: KindDeployment,
				Metadata: Metadata{Name: "web", Project: "default"},
				Spec: DeploymentSpec{
					Mode: ModeReplicated, Replicas: 4,
					Container: Container{
						Image:         "nginx",
						Ports:         []Port{{ContainerPort: 80, Protocol: "tcp"}},
						RestartPolicy: RestartAlways,
					},
					Update: Update{
						BatchSize:        IntOrPercent{Value: 3},
						MaxUnavailable:   IntOrPercent{Value: 100, Percent: true},
						Canary:           IntOrPercent{Value: 4},
						AutoPromote:      true,
						HealthyDeadline:  Duration(time.Minute),
						ProgressDeadline: Duration(time.Minute),
						MaxFailureRatio:  1,
						Order:            OrderStartFirst,
						PrePull:          true,
						BatchDelay:       Duration(90 * time.Second),
					},
					ImagePolicy: ImagePolicyResolveOnServer,
				},
			}},
		},
		{
			name: "update: empty or null is all defaults; a canary of a deployment scaled to zero",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update: {}
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: db}
spec:
  mode: replicated
  replicas: 0
  container: {image: nginx}
  update: {canary: 2, maxFailureRatio: 0.25, healthyDeadline: 10m, progressDeadline: 10m}
`,
			want: []Deployment{
				{
					APIVersion: APIVersion, Kind: KindDeployment,
					Metadata: Metadata{Name: "web", Project: "default"},
					Spec:     DeploymentSpec{Mode: ModeGlobal, Container: defaulted("nginx"), Update: defaultUpdate},
				},
				{
					APIVersion: APIVersion, Kind: KindDeployment,
					Metadata: Metadata{Name: "api", Project: "default"},
					Spec:     DeploymentSpec{Mode: ModeGlobal, Container: defaulted("nginx"), Update: defaultUpdate},
				},
				{
					APIVersion: APIVersion, Kind: KindDeployment,
					Metadata: Metadata{Name: "db", Project: "default"},
					Spec: DeploymentSpec{Mode: ModeReplicated, Container: defaulted("nginx"), Update: Update{
						BatchSize:        IntOrPercent{Value: 25, Percent: true},
						MaxUnavailable:   IntOrPercent{Value: 25, Percent: true},
						Canary:           IntOrPercent{Value: 2},
						MinHealthyTime:   Duration(10 * time.Second),
						HealthyDeadline:  Duration(10 * time.Minute),
						ProgressDeadline: Duration(10 * time.Minute),
						MaxFailureRatio:  0.25,
						AutoRollback:     true,
						Order:            OrderStopFirst,
					}},
				},
			},
		},
		{
			name: "update in JSON",
			yaml: `{"apiVersion": "dockfleet.io/v1", "kind": "Deployment", "metadata": {"name": "web"},
 "spec": {"container": {"image": "nginx"}, "update": {"batchSize": "10%", "canary": "1", "maxUnavailable": 1}}}`,
			want: []Deployment{{
				APIVersion: APIVersion, Kind: KindDeployment,
				Metadata: Metadata{Name: "web", Project: "default"},
				Spec: DeploymentSpec{Mode: ModeGlobal, Container: defaulted("nginx"), Update: Update{
					BatchSize:        IntOrPercent{Value: 10, Percent: true},
					MaxUnavailable:   IntOrPercent{Value: 1},
					Canary:           IntOrPercent{Value: 1},
					MinHealthyTime:   Duration(10 * time.Second),
					HealthyDeadline:  Duration(5 * time.Minute),
					ProgressDeadline: Duration(10 * time.Minute),
					AutoRollback:     true,
					Order:            OrderStopFirst,
				}},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("app.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse() error:\n%v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse() =\n%s\nwant\n%s", dump(got), dump(tt.want))
			}
		})
	}
}

// fullSpec is testdata/full.yaml as Parse should read it.
var fullSpec = Deployment{
	APIVersion: APIVersion,
	Kind:       KindDeployment,
	Metadata: Metadata{
		Name:    "api",
		Project: "shop",
		Labels:  map[string]string{"team": "payments", "example.com/tier": "backend"},
	},
	Spec: DeploymentSpec{
		Mode:     ModeReplicated,
		Replicas: 3,
		Selector: Selector{
			MatchLabels: map[string]string{"role": "web"},
			MatchExpressions: []Requirement{
				{Key: "zone", Operator: OpIn, Values: []string{"eu-1", "eu-2"}},
				{Key: "maintenance", Operator: OpDoesNotExist},
			},
		},
		Container: Container{
			Image:   "registry.example.com:5000/shop/api:1.4.2",
			Command: []string{"/bin/api"},
			Args:    []string{"--listen", ":8080"},
			Env:     map[string]string{"LOG_LEVEL": "info", "WORKERS": "4"},
			Ports: []Port{
				{ContainerPort: 8080, HostPort: 80, HostIP: "127.0.0.1", Protocol: "tcp"},
				{ContainerPort: 5353, Protocol: "udp"},
			},
			Volumes: []Volume{
				{Type: VolumeNamed, Source: "api-data", Target: "/var/lib/api"},
				{Type: VolumeBind, Source: "/etc/ssl/certs", Target: "/etc/ssl/certs", ReadOnly: true},
			},
			Resources:     Resources{CPUs: 0.5, Memory: 256 << 20},
			RestartPolicy: RestartOnFailure,
			HealthCheck: &HealthCheck{
				HTTP:        &HTTPCheck{Path: "/healthz", Port: 8080},
				Interval:    Duration(5 * time.Second),
				Timeout:     Duration(time.Second),
				Retries:     5,
				StartPeriod: Duration(30 * time.Second),
			},
			Labels: map[string]string{"com.example.owner": "payments"},
		},
		Update: Update{
			BatchSize:        IntOrPercent{Value: 1},
			MaxUnavailable:   IntOrPercent{Value: 50, Percent: true},
			Canary:           IntOrPercent{Value: 1},
			AutoPromote:      true,
			MinHealthyTime:   Duration(30 * time.Second),
			HealthyDeadline:  Duration(3 * time.Minute),
			ProgressDeadline: Duration(15 * time.Minute),
			MaxFailureRatio:  0.34,
			AutoRollback:     false,
			Order:            OrderStopFirst,
			PrePull:          true,
			BatchDelay:       Duration(20 * time.Second),
		},
	},
}

func TestParseFull(t *testing.T) {
	data, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("full.yaml", data)
	if err != nil {
		t.Fatalf("Parse() error:\n%v", err)
	}
	if want := []Deployment{fullSpec}; !reflect.DeepEqual(got, want) {
		t.Errorf("Parse() =\n%s\nwant\n%s", dump(got), dump(want))
	}
}

// TestRoundTrip checks that what the server stores and serves can be applied
// again: Parse → JSON → Parse, Parse → JSON → YAML (as `get -o yaml` writes
// it) → Parse, and Parse → JSON → json.Unmarshal all give back the same
// deployments.
func TestRoundTrip(t *testing.T) {
	inputs := map[string]string{
		"full":    "testdata/full.yaml",
		"example": "testdata/minimal.yaml",
		"tcp":     "testdata/tcp.yaml",
		"update":  "testdata/update.yaml",
	}
	for name, file := range inputs {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			want, err := Parse(file, data)
			if err != nil {
				t.Fatalf("Parse() error:\n%v", err)
			}
			// One JSON (or YAML) document per deployment, as `get` writes them.
			var js, ys []byte
			for _, dep := range want {
				j, err := json.Marshal(dep)
				if err != nil {
					t.Fatalf("json.Marshal() error: %v", err)
				}
				js = append(append(js, "---\n"...), j...)
				js = append(js, '\n')

				var generic any
				if err := json.Unmarshal(j, &generic); err != nil {
					t.Fatal(err)
				}
				y, err := yaml.Marshal(generic)
				if err != nil {
					t.Fatal(err)
				}
				ys = append(append(ys, "---\n"...), y...)

				var decoded Deployment
				if err := json.Unmarshal(j, &decoded); err != nil {
					t.Fatalf("json.Unmarshal() error: %v", err)
				}
				if !reflect.DeepEqual(decoded, dep) {
					t.Errorf("json.Unmarshal() =\n%s\nwant\n%s", dump(decoded), dump(dep))
				}
			}
			got, err := Parse("get.json", js)
			if err != nil {
				t.Fatalf("Parse(JSON) error:\n%v\nJSON:\n%s", err, js)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse(JSON) =\n%s\nwant\n%s", dump(got), dump(want))
			}
			got, err = Parse("get.yaml", ys)
			if err != nil {
				t.Fatalf("Parse(YAML of JSON) error:\n%v\nYAML:\n%s", err, ys)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse(YAML of JSON) =\n%s\nwant\n%s", dump(got), dump(want))
			}
		})
	}
}

func dump(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err.Error()
	}
	return string(b)
}
