package spec

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestParseErrors checks the exact messages, lines included, for bad specs.
// Each spec is a valid one with one kind of mistake, several times over where
// that shows that every problem is reported.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "malformed YAML",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
    project: x
`,
			want: []string{"app.yaml:5: invalid YAML: mapping values are not allowed in this context"},
		},
		{
			name: "malformed YAML in a later document",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec: {container: {image: nginx, ports: [80}}
`,
			want: []string{"app.yaml:4: invalid YAML: did not find expected ',' or ']'"},
		},
		{
			name: "no documents",
			yaml: "# nothing here\n---\n",
			want: []string{"app.yaml:1: the file has no documents; want at least one Deployment"},
		},
		{
			name: "not UTF-8",
			yaml: "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: {name: \xff}\n",
			want: []string{"app.yaml:3: byte 0xff is not UTF-8; save the file as UTF-8"},
		},
		{
			name: "control character",
			yaml: "apiVersion: dockfleet.io/v1\nkind: \x07Deployment\n",
			want: []string{"app.yaml:2: character U+0007 is not allowed in YAML"},
		},
		{
			name: "unknown anchor",
			yaml: "apiVersion: dockfleet.io/v1\nkind: Deployment\nmetadata: *meta\n",
			want: []string{"app.yaml:3: invalid YAML: unknown anchor 'meta' referenced"},
		},
		{
			name: "document is not a mapping",
			yaml: "- apiVersion: dockfleet.io/v1\n",
			want: []string{"app.yaml:1: got a list; want a mapping with apiVersion, kind, metadata and spec"},
		},
		{
			name: "other apiVersion and kind: the rest is not judged",
			yaml: `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: Web
spec:
  template: {}
`,
			want: []string{
				`app.yaml:1: apiVersion: "apps/v1" is not supported; use "dockfleet.io/v1"`,
				`app.yaml:2: kind: "StatefulSet" is not supported; use "Deployment"`,
			},
		},
		{
			name: "required fields point at their parent",
			yaml: `# a comment first
metadata:
  labels: {app: web}
spec:
  container:
    command: [run]
`,
			want: []string{
				`app.yaml:2: apiVersion: is required; use "dockfleet.io/v1"`,
				`app.yaml:2: kind: is required; use "Deployment"`,
				"app.yaml:2: metadata.name: is required",
				"app.yaml:5: spec.container.image: is required",
			},
		},
		{
			name: "a null required field points at itself",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
spec:
  container:
    image:
`,
			want: []string{"app.yaml:7: spec.container.image: is required"},
		},
		{
			name: "unknown fields",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
spec:
  replica: 2
  container:
    image: nginx
    container_port: 80
    ports:
      - containerPort: 80
        host_ip: 127.0.0.1
    tty: true
status: {}
`,
			want: []string{
				"app.yaml:6: spec.replica: unknown field; did you mean replicas?",
				"app.yaml:9: spec.container.container_port: unknown field; accepted fields are args, command, env, healthCheck, image, labels, ports, resources, restartPolicy, volumes",
				"app.yaml:12: spec.container.ports[0].host_ip: unknown field; did you mean hostIP?",
				"app.yaml:13: spec.container.tty: unknown field; accepted fields are args, command, env, healthCheck, image, labels, ports, resources, restartPolicy, volumes",
				"app.yaml:14: status: unknown field; accepted fields are apiVersion, kind, metadata, spec",
			},
		},
		{
			name: "wrong YAML types",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
  labels: [app]
spec:
  mode: replicated
  replicas: "3"
  container:
    image: nginx
    command: /bin/sh -c true
    env:
      A: {b: c}
    ports:
      containerPort: 80
    volumes:
      - {type: bind, source: /srv, target: /srv, readOnly: "yes"}
    resources:
      cpus: "1"
      memory: [1]
    healthCheck:
      tcp: {port: 80.5}
      retries: true
`,
			want: []string{
				"app.yaml:5: metadata.labels: got a list; want a mapping",
				`app.yaml:8: spec.replicas: got the string "3"; want an integer`,
				`app.yaml:11: spec.container.command: got the string "/bin/sh -c true"; want a list`,
				"app.yaml:13: spec.container.env.A: got a mapping; want a string",
				"app.yaml:15: spec.container.ports: got a mapping; want a list",
				`app.yaml:17: spec.container.volumes[0].readOnly: got the string "yes"; want true or false`,
				`app.yaml:19: spec.container.resources.cpus: got the string "1"; want a number`,
				"app.yaml:20: spec.container.resources.memory: got a list; want a string",
				"app.yaml:22: spec.container.healthCheck.tcp.port: got the number 80.5; want an integer",
				"app.yaml:23: spec.container.healthCheck.retries: got the boolean true; want an integer",
			},
		},
		{
			name: "a parent of the wrong type hides its children",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
spec:
  container: nginx
`,
			want: []string{`app.yaml:6: spec.container: got the string "nginx"; want a mapping`},
		},
		{
			name: "numbers out of range",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
spec:
  mode: replicated
  replicas: 9223372036854775808
  container:
    image: nginx
    resources:
      cpus: .inf
`,
			want: []string{
				"app.yaml:7: spec.replicas: 9223372036854775808 is out of range",
				"app.yaml:11: spec.container.resources.cpus: got .inf; want a finite number",
			},
		},
		{
			name: "duplicate keys",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
spec:
  container:
    image: nginx
    env:
      A: "1"
      A: "2"
    image: redis
`,
			want: []string{
				"app.yaml:10: spec.container.env.A: duplicate key; it is first given at line 9",
				"app.yaml:11: spec.container.image: duplicate key; it is first given at line 7",
			},
		},
		{
			name: "names",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: Web
  project: shop_eu
spec: {container: {image: nginx}}
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: 1web
  project: shop-
spec: {container: {image: nginx}}
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: a-name-that-goes-on-and-on-and-on-well-past-the-sixty-three-limit
spec: {container: {image: nginx}}
`,
			want: []string{
				`app.yaml:4: metadata.name: "Web" must start with a lowercase letter`,
				`app.yaml:5: metadata.project: "shop_eu" contains '_'; use lowercase letters, digits and '-'`,
				`app.yaml:11: metadata.name: "1web" must start with a lowercase letter`,
				`app.yaml:12: metadata.project: "shop-" must end with a lowercase letter or digit`,
				`app.yaml:18: metadata.name: "a-name-that-goes-on-and-on-and-on-well-past-the-sixty-three-limit" is 65 characters; at most 63 are allowed`,
			},
		},
		{
			name: "metadata labels",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata:
  name: web
  labels:
    "team name": x
    Example.com/tier: web
    a/b/c: x
    -app: x
    example.com/: x
    version: "1.0 beta"
    owner: -x
spec:
  container: {image: nginx}
`,
			want: []string{
				`app.yaml:6: metadata.labels.team name: invalid label key "team name": contains ' '; only letters, digits, '-', '_' and '.' are allowed`,
				`app.yaml:7: metadata.labels.Example.com/tier: invalid label key "Example.com/tier": prefix "Example.com" is not a DNS subdomain: contains 'E'; only lowercase letters, digits, '-' and '.' are allowed`,
				`app.yaml:8: metadata.labels.a/b/c: invalid label key "a/b/c": must have at most one '/'`,
				`app.yaml:9: metadata.labels.-app: invalid label key "-app": must start and end with a letter or digit`,
				`app.yaml:10: metadata.labels.example.com/: invalid label key "example.com/": name after the '/' must not be empty`,
				`app.yaml:11: metadata.labels.version: invalid label value "1.0 beta": contains ' '; only letters, digits, '-', '_' and '.' are allowed`,
				`app.yaml:12: metadata.labels.owner: invalid label value "-x": must start and end with a letter or digit`,
			},
		},
		{
			name: "mode",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: daemon
  container: {image: nginx}
`,
			want: []string{`app.yaml:5: spec.mode: "daemon" is not a mode; use global or replicated`},
		},
		{
			name: "replicas in global mode",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: global
  replicas: 3
  container: {image: nginx}
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 3
  container: {image: nginx}
`,
			want: []string{
				"app.yaml:6: spec.replicas: replicas needs mode: replicated; global mode runs one instance on every matching node",
				"app.yaml:13: spec.replicas: replicas needs mode: replicated; global mode runs one instance on every matching node",
			},
		},
		{
			name: "negative replicas",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: replicated
  replicas: -1
  container: {image: nginx}
`,
			want: []string{"app.yaml:6: spec.replicas: -1 is negative; want 0 or more"},
		},
		{
			name: "selector",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  selector:
    matchLabels:
      zone: eu 1
    matchExpressions:
      - key: zone
        operator: Equals
        values: [a]
      - key: zone
        operator: In
      - key: ssd
        operator: Exists
        values: ["true"]
      - operator: NotIn
        values: [a, "b c"]
      - key: gpu
  container: {image: nginx}
`,
			want: []string{
				`app.yaml:7: spec.selector.matchLabels.zone: invalid label value "eu 1": contains ' '; only letters, digits, '-', '_' and '.' are allowed`,
				`app.yaml:10: spec.selector.matchExpressions[0].operator: "Equals" is not an operator; use In, NotIn, Exists or DoesNotExist`,
				"app.yaml:12: spec.selector.matchExpressions[1].values: In needs at least one value",
				"app.yaml:16: spec.selector.matchExpressions[2].values: Exists takes no values",
				"app.yaml:17: spec.selector.matchExpressions[3].key: is required",
				`app.yaml:18: spec.selector.matchExpressions[3].values[1]: invalid label value "b c": contains ' '; only letters, digits, '-', '_' and '.' are allowed`,
				"app.yaml:19: spec.selector.matchExpressions[4].operator: is required; use In, NotIn, Exists or DoesNotExist",
			},
		},
		{
			name: "image reference",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: Nginx:latest
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container:
    image: "nginx:"
`,
			want: []string{
				`app.yaml:6: spec.container.image: "Nginx:latest" is not a valid image reference: invalid reference format: repository name (library/Nginx) must be lowercase`,
				`app.yaml:13: spec.container.image: "nginx:" is not a valid image reference: invalid reference format`,
			},
		},
		{
			name: "empty program",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    command:
      - ""
      - -c
`,
			want: []string{"app.yaml:8: spec.container.command[0]: the program to run must not be empty"},
		},
		{
			name: "env names",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    env:
      GOOD_1: x
      1BAD: x
      BAD-NAME: x
`,
			want: []string{
				`app.yaml:9: spec.container.env.1BAD: "1BAD" is not a valid variable name; use letters, digits and '_', not starting with a digit`,
				`app.yaml:10: spec.container.env.BAD-NAME: "BAD-NAME" is not a valid variable name; use letters, digits and '_', not starting with a digit`,
			},
		},
		{
			name: "port numbers and protocols",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    ports:
      - containerPort: 70000
      - containerPort: 0
        hostPort: -1
      - hostPort: 8080
        protocol: sctp
`,
			want: []string{
				"app.yaml:8: spec.container.ports[0].containerPort: 70000 is out of range 1-65535",
				"app.yaml:9: spec.container.ports[1].containerPort: 0 is out of range 1-65535",
				"app.yaml:10: spec.container.ports[1].hostPort: -1 is out of range 1-65535",
				"app.yaml:11: spec.container.ports[2].containerPort: is required",
				`app.yaml:12: spec.container.ports[2].protocol: "sctp" is not a protocol; use tcp or udp`,
			},
		},
		{
			name: "host addresses",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    ports:
      - {containerPort: 80, hostPort: 8080}
      - {containerPort: 81, hostPort: 8080, hostIP: 127.0.0.1}
      - {containerPort: 82, hostPort: 8080, protocol: udp}
      - {containerPort: 83, hostPort: 9090, hostIP: 10.0.0.1}
      - {containerPort: 84, hostPort: 9090, hostIP: 10.0.0.2}
      - {containerPort: 85, hostPort: 9090, hostIP: 10.0.0.2}
      - {containerPort: 86, hostIP: 10.0.0.3}
      - {containerPort: 87, hostPort: 9091, hostIP: 10.0.0.256}
`,
			want: []string{
				"app.yaml:9: spec.container.ports[1]: host port 8080/tcp on 127.0.0.1 is already published by ports[0]",
				"app.yaml:13: spec.container.ports[5]: host port 9090/tcp on 10.0.0.2 is already published by ports[4]",
				"app.yaml:14: spec.container.ports[6].hostIP: needs a hostPort; without one the port is not published",
				`app.yaml:15: spec.container.ports[7].hostIP: "10.0.0.256" is not an IP address`,
			},
		},
		{
			name: "volumes",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    volumes:
      - {type: tmpfs, source: x, target: /tmp}
      - {source: data, target: /data}
      - {type: bind, source: srv/data, target: srv}
      - {type: volume, source: my data, target: /}
      - {type: volume, target: /cache}
      - {type: bind, source: /srv/cache, target: /cache/}
`,
			want: []string{
				`app.yaml:8: spec.container.volumes[0].type: "tmpfs" is not a volume type; use volume or bind`,
				"app.yaml:9: spec.container.volumes[1].type: is required; use volume or bind",
				`app.yaml:10: spec.container.volumes[2].source: "srv/data" must be an absolute path`,
				`app.yaml:10: spec.container.volumes[2].target: "srv" must be an absolute path`,
				`app.yaml:11: spec.container.volumes[3].source: "my data" is not a valid volume name; use letters, digits, '_', '.' and '-', starting with a letter or digit`,
				`app.yaml:11: spec.container.volumes[3].target: cannot be "/"; Docker does not mount over the container's root`,
				"app.yaml:12: spec.container.volumes[4].source: is required",
				`app.yaml:13: spec.container.volumes[5].target: "/cache" is already mounted by volumes[4]`,
			},
		},
		{
			name: "resources",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    resources:
      cpus: -0.5
      memory: 4Mi
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container:
    image: nginx
    resources:
      memory: 512mb
`,
			want: []string{
				"app.yaml:8: spec.container.resources.cpus: -0.5 is negative; use 0 for no limit or a positive number of CPUs",
				"app.yaml:9: spec.container.resources.memory: 4Mi is below Docker's minimum of 6Mi",
				`app.yaml:18: spec.container.resources.memory: "512mb" is not a size; write a whole number with an optional unit Ki, Mi, Gi, Ti, K, M, G or T, like "128Mi"`,
			},
		},
		{
			name: "restart policy",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    restartPolicy: unless-stopped
`,
			want: []string{`app.yaml:7: spec.container.restartPolicy: "unless-stopped" is not a restart policy; use always, on-failure or never`},
		},
		{
			name: "health check probes",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    healthCheck:
      interval: 5s
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container:
    image: nginx
    healthCheck:
      http: {path: /}
      tcp: {port: 80}
      exec: {command: []}
`,
			want: []string{
				"app.yaml:7: spec.container.healthCheck: needs one of http, tcp or exec",
				"app.yaml:16: spec.container.healthCheck: has http and tcp and exec; set exactly one of http, tcp or exec",
				"app.yaml:17: spec.container.healthCheck.http.port: is required",
				"app.yaml:19: spec.container.healthCheck.exec.command: is required",
			},
		},
		{
			name: "health check probe fields",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    healthCheck:
      http: {path: healthz, port: 65536}
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container:
    image: nginx
    healthCheck:
      exec:
        command: ["", "-c", "true"]
`,
			want: []string{
				`app.yaml:8: spec.container.healthCheck.http.path: "healthz" must start with '/'`,
				"app.yaml:8: spec.container.healthCheck.http.port: 65536 is out of range 1-65535",
				"app.yaml:18: spec.container.healthCheck.exec.command[0]: the program to run must not be empty",
			},
		},
		{
			name: "health check timing",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    healthCheck:
      tcp: {port: 80}
      interval: 5
      timeout: -1s
      retries: 0
      startPeriod: -10s
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container:
    image: nginx
    healthCheck:
      tcp: {port: 80}
      interval: 0s
      timeout: 0s
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: db}
spec:
  container:
    image: nginx
    healthCheck:
      tcp: {port: 80}
      interval: 5s
      timeout: 10s
`,
			want: []string{
				`app.yaml:9: spec.container.healthCheck.interval: "5" is not a duration; write a number with a unit, like "5s" or "1m30s"`,
				"app.yaml:10: spec.container.healthCheck.timeout: -1s must be more than 0s",
				"app.yaml:11: spec.container.healthCheck.retries: 0 must be at least 1",
				"app.yaml:12: spec.container.healthCheck.startPeriod: -10s must not be negative",
				"app.yaml:22: spec.container.healthCheck.interval: 0s must be more than 0s",
				"app.yaml:23: spec.container.healthCheck.timeout: 0s must be more than 0s",
				"app.yaml:34: spec.container.healthCheck.timeout: 10s is longer than the interval 5s",
			},
		},
		{
			name: "timeout longer than the interval",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    healthCheck:
      tcp: {port: 80}
      interval: 1s
      timeout: 3s
`,
			want: []string{"app.yaml:10: spec.container.healthCheck.timeout: 3s is longer than the interval 1s"},
		},
		{
			name: "reserved container labels",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    labels:
      com.example.team: web
      dockfleet.instance: forged
      dockfleet.io/owner: me
`,
			want: []string{
				`app.yaml:9: spec.container.labels.dockfleet.instance: the prefix "dockfleet." is reserved for the labels dockfleet sets`,
				`app.yaml:10: spec.container.labels.dockfleet.io/owner: the prefix "dockfleet." is reserved for the labels dockfleet sets`,
			},
		},
		{
			name: "the same deployment twice",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec: {container: {image: nginx}}
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web, project: default}
spec: {container: {image: redis}}
`,
			want: []string{`app.yaml:8: metadata.name: deployment "default/web" is already defined at line 3`},
		},
		{
			name: "merge key cycle",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: &m
  name: web
  <<: *m
spec: {container: {image: nginx}}
`,
			want: []string{"app.yaml:5: metadata: a merge (<<) includes the mapping it is in"},
		},
		{
			name: "aliases that expand too much",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  selector:
    matchExpressions:
      - &e {key: k, operator: In, values: [` + strings.Repeat("a, ", 300) + `a]}
` + strings.Repeat("      - *e\n", 300) + `  container: {image: nginx}
`,
			want: []string{"app.yaml:7: aliases expand this document too much; write the repeated parts out"},
		},
		{
			name: "lists, mappings and strings over their bounds",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    args: [` + strings.Repeat("a, ", 1000) + `a]
    command: [sh]
    env:
` + envLines(1001) + `    labels: {team: ` + strings.Repeat("x", 70000) + `}
`,
			want: []string{
				"app.yaml:7: spec.container.args: has 1001 items; at most 1000 are allowed",
				"app.yaml:9: spec.container.env: has 1001 items; at most 1000 are allowed",
				"app.yaml:1011: spec.container.labels.team: is 70000 bytes long; at most 65536 are allowed",
			},
		},
		{
			name: "a mapping over its bound through a merge key",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
x: &big {` + envPairs(600) + `}
spec:
  container:
    image: nginx
    env:
      <<: *big
` + envLines(500) + `
`,
			want: []string{
				"app.yaml:4: x: unknown field; accepted fields are apiVersion, kind, metadata, spec",
				"app.yaml:8: spec.container.env: has 1100 items; at most 1000 are allowed",
			},
		},
		{
			name: "keys that are not strings",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    env:
      [A, B]: x
`,
			want: []string{"app.yaml:8: spec.container.env: got a list as a key; keys must be strings"},
		},
		{
			name: "update: unknown fields",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    batch_size: 2
    maxSurge: 1
    Order: start-first
    strategy: rolling
`,
			want: []string{
				"app.yaml:7: spec.update.batch_size: unknown field; did you mean batchSize?",
				"app.yaml:8: spec.update.maxSurge: unknown field; accepted fields are autoPromote, autoRollback, batchDelay, batchSize, canary, healthyDeadline, maxFailureRatio, maxUnavailable, minHealthyTime, order, prePull, progressDeadline",
				"app.yaml:9: spec.update.Order: unknown field; did you mean order?",
				"app.yaml:10: spec.update.strategy: unknown field; accepted fields are autoPromote, autoRollback, batchDelay, batchSize, canary, healthyDeadline, maxFailureRatio, maxUnavailable, minHealthyTime, order, prePull, progressDeadline",
			},
		},
		{
			name: "update: wrong YAML types",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    batchSize: 2.5
    maxUnavailable: [1]
    canary: true
    autoPromote: "yes"
    minHealthyTime: 10
    maxFailureRatio: "0.5"
    autoRollback: 1
    order: {start: first}
    prePull: no
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update: rolling
`,
			want: []string{
				`app.yaml:7: spec.update.batchSize: got the number 2.5; want a count like 2 or a percentage like "25%"`,
				`app.yaml:8: spec.update.maxUnavailable: got a list; want a count like 2 or a percentage like "25%"`,
				`app.yaml:9: spec.update.canary: got the boolean true; want a count like 2 or a percentage like "25%"`,
				`app.yaml:10: spec.update.autoPromote: got the string "yes"; want true or false`,
				`app.yaml:11: spec.update.minHealthyTime: "10" is not a duration; write a number with a unit, like "5s" or "1m30s"`,
				`app.yaml:12: spec.update.maxFailureRatio: got the string "0.5"; want a number`,
				"app.yaml:13: spec.update.autoRollback: got the integer 1; want true or false",
				"app.yaml:14: spec.update.order: got a mapping; want a string",
				`app.yaml:15: spec.update.prePull: got the string "no"; want true or false`,
				`app.yaml:22: spec.update: got the string "rolling"; want a mapping`,
			},
		},
		{
			name: "batchSize: zero and negative",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    batchSize: 0
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
    batchSize: -1
`,
			want: []string{
				"app.yaml:7: spec.update.batchSize: 0 must be at least 1",
				`app.yaml:15: spec.update.batchSize: -1 is negative; write a count like 2 or a percentage like "25%"`,
			},
		},
		{
			name: "batchSize: percentages out of range",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    batchSize: 150%
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
    batchSize: "0%"
`,
			want: []string{
				`app.yaml:7: spec.update.batchSize: "150%" is over 100%`,
				`app.yaml:15: spec.update.batchSize: "0%" must be at least 1%`,
			},
		},
		{
			name: "batchSize: malformed",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    batchSize: abc
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
    batchSize: 10.5%
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: db}
spec:
  container: {image: nginx}
  update:
    batchSize: "-1"
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: mq}
spec:
  container: {image: nginx}
  update:
    batchSize: 25 %
`,
			want: []string{
				`app.yaml:7: spec.update.batchSize: "abc" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`,
				`app.yaml:15: spec.update.batchSize: "10.5%" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`,
				`app.yaml:23: spec.update.batchSize: "-1" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`,
				`app.yaml:31: spec.update.batchSize: "25 %" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`,
			},
		},
		{
			name: "batchSize: too large",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    batchSize: 9223372036854775808
    canary: 99999999999999999999%
`,
			want: []string{
				"app.yaml:7: spec.update.batchSize: 9223372036854775808 is out of range",
				`app.yaml:8: spec.update.canary: "99999999999999999999%" is too large`,
			},
		},
		{
			name: "maxUnavailable",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    maxUnavailable: 0
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
    maxUnavailable: 0%
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: db}
spec:
  container: {image: nginx}
  update:
    maxUnavailable: 101%
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: mq}
spec:
  container: {image: nginx}
  update:
    maxUnavailable: -2
`,
			want: []string{
				"app.yaml:7: spec.update.maxUnavailable: 0 must be at least 1; stop-first order takes an instance down to replace it, and 0 would never allow that",
				`app.yaml:15: spec.update.maxUnavailable: "0%" must be at least 1%; stop-first order takes an instance down to replace it, and 0 would never allow that`,
				`app.yaml:23: spec.update.maxUnavailable: "101%" is over 100%`,
				`app.yaml:31: spec.update.maxUnavailable: -2 is negative; write a count like 2 or a percentage like "25%"`,
			},
		},
		{
			name: "a bad batchSize is not said again of maxUnavailable",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    batchSize: 0
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
    batchSize: x
`,
			want: []string{
				"app.yaml:7: spec.update.batchSize: 0 must be at least 1",
				`app.yaml:15: spec.update.batchSize: "x" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`,
			},
		},
		{
			name: "canary",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    canary: -1
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
    canary: 150%
`,
			want: []string{
				`app.yaml:7: spec.update.canary: -1 is negative; write 0 for no canary, a count like 1 or a percentage like "10%"`,
				`app.yaml:15: spec.update.canary: "150%" is over 100%`,
			},
		},
		{
			name: "canary larger than replicas",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: replicated
  replicas: 3
  container: {image: nginx}
  update:
    canary: 5
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  mode: replicated
  container: {image: nginx}
  update:
    canary: 2
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: db}
spec:
  mode: replicated
  replicas: "3"
  container: {image: nginx}
  update:
    canary: 5
`,
			want: []string{
				"app.yaml:9: spec.update.canary: 5 is more than the 3 replicas",
				"app.yaml:18: spec.update.canary: 2 is more than the 1 replica",
				`app.yaml:25: spec.replicas: got the string "3"; want an integer`,
			},
		},
		{
			name: "durations",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    minHealthyTime: -1s
    healthyDeadline: 0s
    progressDeadline: -5m
    batchDelay: -1s
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
    minHealthyTime: 10
    healthyDeadline: 5 minutes
    batchDelay: 1d
`,
			want: []string{
				"app.yaml:7: spec.update.minHealthyTime: -1s must not be negative",
				"app.yaml:8: spec.update.healthyDeadline: 0s must be more than 0s",
				"app.yaml:9: spec.update.progressDeadline: -5m0s must be more than 0s",
				"app.yaml:10: spec.update.batchDelay: -1s must not be negative",
				`app.yaml:18: spec.update.minHealthyTime: "10" is not a duration; write a number with a unit, like "5s" or "1m30s"`,
				`app.yaml:19: spec.update.healthyDeadline: "5 minutes" is not a duration; write a number with a unit, like "5s" or "1m30s"`,
				`app.yaml:20: spec.update.batchDelay: "1d" is not a duration; write a number with a unit, like "5s" or "1m30s"`,
			},
		},
		{
			name: "minHealthyTime must be shorter than healthyDeadline",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    minHealthyTime: 5m
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
    healthyDeadline: 5s
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: db}
spec:
  container: {image: nginx}
  update:
    minHealthyTime: 1m
    healthyDeadline: 30s
`,
			want: []string{
				"app.yaml:7: spec.update.minHealthyTime: 5m0s is not shorter than the default healthyDeadline 5m0s; an updated instance must be healthy for minHealthyTime within its healthyDeadline",
				"app.yaml:15: spec.update.healthyDeadline: 5s is not longer than the default minHealthyTime 10s; an updated instance must be healthy for minHealthyTime within its healthyDeadline",
				"app.yaml:23: spec.update.minHealthyTime: 1m0s is not shorter than the healthyDeadline 30s; an updated instance must be healthy for minHealthyTime within its healthyDeadline",
			},
		},
		{
			name: "progressDeadline must not be shorter than healthyDeadline",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    progressDeadline: 1m
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
    healthyDeadline: 20m
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: db}
spec:
  container: {image: nginx}
  update:
    healthyDeadline: 2m
    progressDeadline: 90s
`,
			want: []string{
				"app.yaml:7: spec.update.progressDeadline: 1m0s is shorter than the default healthyDeadline 5m0s; the rollout would give up before an instance's healthyDeadline",
				"app.yaml:15: spec.update.healthyDeadline: 20m0s is longer than the default progressDeadline 10m0s; the rollout would give up before an instance's healthyDeadline",
				"app.yaml:24: spec.update.progressDeadline: 1m30s is shorter than the healthyDeadline 2m0s; the rollout would give up before an instance's healthyDeadline",
			},
		},
		{
			name: "maxFailureRatio",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    maxFailureRatio: 1.5
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
    maxFailureRatio: -0.1
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: db}
spec:
  container: {image: nginx}
  update:
    maxFailureRatio: .nan
`,
			want: []string{
				"app.yaml:7: spec.update.maxFailureRatio: 1.5 is not between 0 and 1; 0.1 lets a tenth of the instances fail",
				"app.yaml:15: spec.update.maxFailureRatio: -0.1 is not between 0 and 1; 0.1 lets a tenth of the instances fail",
				"app.yaml:23: spec.update.maxFailureRatio: got .nan; want a finite number",
			},
		},
		{
			name: "order",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  update:
    order: blue-green
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  update:
    order: ""
`,
			want: []string{
				`app.yaml:7: spec.update.order: "blue-green" is not an order; use stop-first or start-first`,
				`app.yaml:15: spec.update.order: "" is not an order; use stop-first or start-first`,
			},
		},
		{
			name: "imagePolicy",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container: {image: nginx}
  imagePolicy: trustNodes
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container: {image: nginx}
  imagePolicy: ""
`,
			want: []string{
				`app.yaml:6: spec.imagePolicy: "trustNodes" is not an image policy; use resolveOnServer, pinFromNodes or unpinned`,
				`app.yaml:13: spec.imagePolicy: "" is not an image policy; use resolveOnServer, pinFromNodes or unpinned`,
			},
		},
		{
			name: "start-first with a fixed host port",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  container:
    image: nginx
    ports:
      - containerPort: 9100
      - containerPort: 80
        hostPort: 8080
      - containerPort: 443
        hostPort: 8443
  update:
    order: start-first
---
apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: api}
spec:
  container:
    image: nginx
    ports:
      - containerPort: 80
        hostPort: 70000
  update:
    order: start-first
`,
			want: []string{
				"app.yaml:14: spec.update.order: start-first cannot run two instances on one host with fixed hostPort 8080 (spec.container.ports[1]); use stop-first, or leave hostPort out",
				"app.yaml:24: spec.container.ports[0].hostPort: 70000 is out of range 1-65535",
			},
		},
		{
			name: "every update problem at once",
			yaml: `apiVersion: dockfleet.io/v1
kind: Deployment
metadata: {name: web}
spec:
  mode: replicated
  replicas: 2
  container:
    image: nginx
    ports:
      - {containerPort: 80, hostPort: 80}
  update:
    batchSize: 200%
    maxUnavailable: 0
    canary: 3
    minHealthyTime: 10m
    healthyDeadline: 5m
    progressDeadline: 1m
    maxFailureRatio: 2
    order: start-first
`,
			want: []string{
				`app.yaml:12: spec.update.batchSize: "200%" is over 100%`,
				"app.yaml:13: spec.update.maxUnavailable: 0 must be at least 1; stop-first order takes an instance down to replace it, and 0 would never allow that",
				"app.yaml:14: spec.update.canary: 3 is more than the 2 replicas",
				"app.yaml:15: spec.update.minHealthyTime: 10m0s is not shorter than the healthyDeadline 5m0s; an updated instance must be healthy for minHealthyTime within its healthyDeadline",
				"app.yaml:17: spec.update.progressDeadline: 1m0s is shorter than the healthyDeadline 5m0s; the rollout would give up before an instance's healthyDeadline",
				"app.yaml:18: spec.update.maxFailureRatio: 2 is not between 0 and 1; 0.1 lets a tenth of the instances fail",
				"app.yaml:19: spec.update.order: start-first cannot run two instances on one host with fixed hostPort 80 (spec.container.ports[0]); use stop-first, or leave hostPort out",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deps, err := Parse("app.yaml", []byte(tt.yaml))
			if deps != nil {
				t.Errorf("Parse() deployments = %v; want nil", deps)
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("Parse() error = %v (%T); want an ErrorList", err, err)
			}
			got := strings.Split(err.Error(), "\n")
			if len(got) != len(list) {
				t.Errorf("Error() has %d lines; want one per FieldError, %d", len(got), len(list))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Parse() errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestFieldError(t *testing.T) {
	tests := []struct {
		err  FieldError
		want string
	}{
		{FieldError{File: "a.yaml", Line: 3, Path: "spec.mode", Msg: "bad"}, "a.yaml:3: spec.mode: bad"},
		{FieldError{File: "a.yaml", Line: 1, Msg: "invalid YAML: x"}, "a.yaml:1: invalid YAML: x"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q; want %q", got, tt.want)
		}
	}
	list := ErrorList{tests[0].err, tests[1].err}
	if got, want := list.Error(), "a.yaml:3: spec.mode: bad\na.yaml:1: invalid YAML: x"; got != want {
		t.Errorf("ErrorList.Error() = %q; want %q", got, want)
	}
}

// envLines is n env entries, one a line, indented for spec.container.env.
func envLines(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "      V%d: x\n", i)
	}
	return b.String()
}

// envPairs is n env entries of a flow mapping, named apart from envLines'.
func envPairs(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "M%d: x, ", i)
	}
	return strings.TrimSuffix(b.String(), ", ")
}
