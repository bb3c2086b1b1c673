package spec

import (
	"maps"
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/distribution/reference"
)

// reservedLabelPrefix marks the container labels the agent sets to find and
// own its containers (see internal/container); a spec may not forge them.
const reservedLabelPrefix = "dockfleet."

// minMemory is the smallest memory limit Docker accepts (6 MiB on Linux);
// checking it here fails the apply instead of every instance.
const minMemory = ByteSize(6 << 20)

var (
	envName    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	volumeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

// validate checks dep, defaults applied, against every rule, recording each
// problem.
func (d *document) validate(dep *Deployment) {
	d.checkName("metadata.name", dep.Metadata.Name)
	d.checkName("metadata.project", dep.Metadata.Project)
	d.checkLabels("metadata.labels", dep.Metadata.Labels, false)

	s := &dep.Spec
	switch s.Mode {
	case ModeGlobal:
		if d.set["spec.replicas"] {
			d.errorf("spec.replicas", "replicas needs mode: replicated; global mode runs one instance on every matching node")
		}
	case ModeReplicated:
		if s.Replicas < 0 {
			d.errorf("spec.replicas", "%d is negative; want 0 or more", s.Replicas)
		}
	default:
		d.errorf("spec.mode", "%s is not a mode; use global or replicated", quote(string(s.Mode)))
	}
	d.checkSelector("spec.selector", s.Selector)
	d.checkContainer("spec.container", &s.Container)
	d.checkUpdate("spec.update", s)
	if d.set["spec.imagePolicy"] && !s.ImagePolicy.Valid() {
		d.errorf("spec.imagePolicy", "%s is not an image policy; use %s, %s or %s", quote(string(s.ImagePolicy)),
			ImagePolicyResolveOnServer, ImagePolicyPinFromNodes, ImagePolicyUnpinned)
	}
}

// checkName checks a DNS-label style name: it becomes part of container
// names and store keys, so it keeps to what both accept everywhere.
func (d *document) checkName(p, name string) {
	if name == "" {
		d.errorf(p, "is required")
		return
	}
	if len(name) > 63 {
		d.errorf(p, "%s is %d characters; at most 63 are allowed", quote(name), len(name))
		return
	}
	if c := rune(name[0]); c < 'a' || c > 'z' {
		d.errorf(p, "%s must start with a lowercase letter", quote(name))
		return
	}
	for _, c := range name {
		if !isLowerAlnum(c) && c != '-' {
			d.errorf(p, "%s contains %q; use lowercase letters, digits and '-'", quote(name), c)
			return
		}
	}
	if strings.HasSuffix(name, "-") {
		d.errorf(p, "%s must end with a lowercase letter or digit", quote(name))
	}
}

func (d *document) checkLabels(p string, labels map[string]string, container bool) {
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		kp := join(p, k)
		if err := ValidateLabelKey(k); err != nil {
			d.errorf(kp, "invalid label key %s: %v", quote(k), err)
		} else if container && strings.HasPrefix(k, reservedLabelPrefix) {
			d.errorf(kp, "the prefix %q is reserved for the labels dockfleet sets", reservedLabelPrefix)
		}
		if err := ValidateLabelValue(labels[k]); err != nil {
			d.errorf(kp, "invalid label value %s: %v", quote(labels[k]), err)
		}
	}
}

func (d *document) checkSelector(p string, s Selector) {
	d.checkLabels(join(p, "matchLabels"), s.MatchLabels, false)
	for i, r := range s.MatchExpressions {
		rp := index(join(p, "matchExpressions"), i)
		if r.Key == "" {
			d.errorf(join(rp, "key"), "is required")
		} else if err := ValidateLabelKey(r.Key); err != nil {
			d.errorf(join(rp, "key"), "invalid label key %s: %v", quote(r.Key), err)
		}
		vp := join(rp, "values")
		switch r.Operator {
		case OpIn, OpNotIn:
			if len(r.Values) == 0 {
				d.errorf(vp, "%s needs at least one value", r.Operator)
			}
		case OpExists, OpDoesNotExist:
			if len(r.Values) > 0 {
				d.errorf(vp, "%s takes no values", r.Operator)
			}
		case "":
			d.errorf(join(rp, "operator"), "is required; use In, NotIn, Exists or DoesNotExist")
		default:
			d.errorf(join(rp, "operator"), "%s is not an operator; use In, NotIn, Exists or DoesNotExist", quote(string(r.Operator)))
		}
		for j, v := range r.Values {
			if err := ValidateLabelValue(v); err != nil {
				d.errorf(index(vp, j), "invalid label value %s: %v", quote(v), err)
			}
		}
	}
}

func (d *document) checkContainer(p string, c *Container) {
	if c.Image == "" {
		d.errorf(join(p, "image"), "is required")
	} else if _, err := reference.ParseNormalizedNamed(c.Image); err != nil {
		d.errorf(join(p, "image"), "%s is not a valid image reference: %v", quote(c.Image), err)
	}
	if len(c.Command) > 0 && c.Command[0] == "" {
		d.errorf(index(join(p, "command"), 0), "the program to run must not be empty")
	}
	for _, k := range slices.Sorted(maps.Keys(c.Env)) {
		if !envName.MatchString(k) {
			d.errorf(join(join(p, "env"), k), "%s is not a valid variable name; use letters, digits and '_', not starting with a digit", quote(k))
		}
	}
	d.checkPorts(join(p, "ports"), c.Ports)
	d.checkVolumes(join(p, "volumes"), c.Volumes)

	rp := join(p, "resources")
	if cpus := c.Resources.CPUs; cpus < 0 {
		d.errorf(join(rp, "cpus"), "%s is negative; use 0 for no limit or a positive number of CPUs", strconv.FormatFloat(cpus, 'g', -1, 64))
	}
	if mem := c.Resources.Memory; mem != 0 && mem < minMemory {
		d.errorf(join(rp, "memory"), "%s is below Docker's minimum of %s", mem, minMemory)
	}

	switch c.RestartPolicy {
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		d.errorf(join(p, "restartPolicy"), "%s is not a restart policy; use always, on-failure or never", quote(string(c.RestartPolicy)))
	}
	if c.HealthCheck != nil {
		d.checkHealthCheck(join(p, "healthCheck"), c.HealthCheck)
	}
	d.checkLabels(join(p, "labels"), c.Labels, true)
}

// checkPort checks a required port number.
func (d *document) checkPort(p string, port int) {
	switch {
	case !d.set[p]:
		d.errorf(p, "is required")
	case port < 1 || port > 65535:
		d.errorf(p, "%d is out of range 1-65535", port)
	}
}

// hostAddr is where a port is published on the host; a nil ip means every
// address.
type hostAddr struct {
	ip       net.IP
	port     int
	protocol string
}

func (a hostAddr) String() string {
	s := strconv.Itoa(a.port) + "/" + a.protocol
	if a.ip != nil {
		s += " on " + a.ip.String()
	}
	return s
}

// overlaps reports whether a and b cannot both be bound: the same port and
// protocol on the same address, or on every address and any one.
func (a hostAddr) overlaps(b hostAddr) bool {
	return a.port == b.port && a.protocol == b.protocol && (a.ip == nil || b.ip == nil || a.ip.Equal(b.ip))
}

func (d *document) checkPorts(p string, ports []Port) {
	var published []hostAddr
	var from []int // from[i] is the index in ports of published[i]
	for i, pt := range ports {
		pp := index(p, i)
		d.checkPort(join(pp, "containerPort"), pt.ContainerPort)
		if d.set[join(pp, "hostPort")] && (pt.HostPort < 0 || pt.HostPort > 65535) {
			d.errorf(join(pp, "hostPort"), "%d is out of range 1-65535", pt.HostPort)
		}
		if pt.Protocol != "tcp" && pt.Protocol != "udp" {
			d.errorf(join(pp, "protocol"), "%s is not a protocol; use tcp or udp", quote(pt.Protocol))
		}
		addr := hostAddr{port: pt.HostPort, protocol: pt.Protocol}
		if pt.HostIP != "" {
			if addr.ip = net.ParseIP(pt.HostIP); addr.ip == nil {
				d.errorf(join(pp, "hostIP"), "%s is not an IP address", quote(pt.HostIP))
				continue
			}
			if pt.HostPort == 0 {
				d.errorf(join(pp, "hostIP"), "needs a hostPort; without one the port is not published")
			}
			if addr.ip.IsUnspecified() {
				addr.ip = nil
			}
		}
		if pt.HostPort < 1 || pt.HostPort > 65535 {
			continue
		}
		for j, other := range published {
			if addr.overlaps(other) {
				d.errorf(pp, "host port %s is already published by ports[%d]", addr, from[j])
				break
			}
		}
		published = append(published, addr)
		from = append(from, i)
	}
}

func (d *document) checkVolumes(p string, volumes []Volume) {
	targets := map[string]int{} // cleaned target → index of the first volume mounting it
	for i, v := range volumes {
		vp := index(p, i)
		switch v.Type {
		case VolumeNamed, VolumeBind:
		case "":
			d.errorf(join(vp, "type"), "is required; use volume or bind")
		default:
			d.errorf(join(vp, "type"), "%s is not a volume type; use volume or bind", quote(string(v.Type)))
		}
		sp := join(vp, "source")
		switch {
		case v.Source == "":
			// A named volume without a source would be anonymous: a new
			// one, and the data left behind, at every container replacement.
			d.errorf(sp, "is required")
		case v.Type == VolumeNamed && !volumeName.MatchString(v.Source):
			d.errorf(sp, "%s is not a valid volume name; use letters, digits, '_', '.' and '-', starting with a letter or digit", quote(v.Source))
		case v.Type == VolumeBind && !path.IsAbs(v.Source):
			d.errorf(sp, "%s must be an absolute path", quote(v.Source))
		}
		tp := join(vp, "target")
		switch {
		case v.Target == "":
			d.errorf(tp, "is required")
		case !path.IsAbs(v.Target):
			d.errorf(tp, "%s must be an absolute path", quote(v.Target))
		case path.Clean(v.Target) == "/":
			d.errorf(tp, "cannot be \"/\"; Docker does not mount over the container's root")
		default:
			t := path.Clean(v.Target)
			if first, dup := targets[t]; dup {
				d.errorf(tp, "%s is already mounted by volumes[%d]", quote(t), first)
			} else {
				targets[t] = i
			}
		}
	}
}

func (d *document) checkHealthCheck(p string, hc *HealthCheck) {
	var probes []string
	if hc.HTTP != nil {
		probes = append(probes, "http")
		if !strings.HasPrefix(hc.HTTP.Path, "/") {
			d.errorf(join(p, "http.path"), "%s must start with '/'", quote(hc.HTTP.Path))
		}
		d.checkPort(join(p, "http.port"), hc.HTTP.Port)
	}
	if hc.TCP != nil {
		probes = append(probes, "tcp")
		d.checkPort(join(p, "tcp.port"), hc.TCP.Port)
	}
	if hc.Exec != nil {
		probes = append(probes, "exec")
		switch cp := join(p, "exec.command"); {
		case len(hc.Exec.Command) == 0:
			d.errorf(cp, "is required")
		case hc.Exec.Command[0] == "":
			d.errorf(index(cp, 0), "the program to run must not be empty")
		}
	}
	switch len(probes) {
	case 0:
		d.errorf(p, "needs one of http, tcp or exec")
	case 1:
	default:
		d.errorf(p, "has %s; set exactly one of http, tcp or exec", strings.Join(probes, " and "))
	}

	ip, tp := join(p, "interval"), join(p, "timeout")
	if hc.Interval <= 0 {
		d.errorf(ip, "%s must be more than 0s", hc.Interval)
	}
	if hc.Timeout <= 0 {
		d.errorf(tp, "%s must be more than 0s", hc.Timeout)
	}
	if hc.Interval > 0 && hc.Timeout > hc.Interval {
		d.errorf(tp, "%s is longer than the interval %s", hc.Timeout, hc.Interval)
	}
	if hc.StartPeriod < 0 {
		d.errorf(join(p, "startPeriod"), "%s must not be negative", hc.StartPeriod)
	}
	if hc.Retries < 1 {
		d.errorf(join(p, "retries"), "%d must be at least 1", hc.Retries)
	}
}

// checkUpdate checks the rollout strategy of s, which it needs whole: the
// canary against the replicas, the order against the ports.
func (d *document) checkUpdate(p string, s *DeploymentSpec) {
	u := &s.Update
	d.checkBatch(join(p, "batchSize"), u.BatchSize, "")
	// An absent maxUnavailable is the batch size; any problem with that is
	// the batch size's, and said there.
	if mp := join(p, "maxUnavailable"); d.set[mp] {
		d.checkBatch(mp, u.MaxUnavailable, "; stop-first order takes an instance down to replace it, and 0 would never allow that")
	}

	cp := join(p, "canary")
	c := u.Canary
	switch {
	case c.Value < 0:
		d.errorf(cp, "%s is negative; write 0 for no canary, a count like 1 or a percentage like \"10%%\"", written(c))
	case c.Percent && c.Value > 100:
		d.errorf(cp, "%s is over 100%%", written(c))
	case !c.Percent && s.Mode == ModeReplicated && !d.bad["spec.replicas"] && s.Replicas > 0 && c.Value > s.Replicas:
		// Scaled to zero is left alone: it is a pause, and the canary is
		// for when the deployment comes back.
		replicas := "replicas"
		if s.Replicas == 1 {
			replicas = "replica"
		}
		d.errorf(cp, "%d is more than the %d %s", c.Value, s.Replicas, replicas)
	}

	minHealthy, healthy, progress := join(p, "minHealthyTime"), join(p, "healthyDeadline"), join(p, "progressDeadline")
	if u.MinHealthyTime < 0 {
		d.errorf(minHealthy, "%s must not be negative", u.MinHealthyTime)
	}
	if u.HealthyDeadline <= 0 {
		d.errorf(healthy, "%s must be more than 0s", u.HealthyDeadline)
	}
	if u.ProgressDeadline <= 0 {
		d.errorf(progress, "%s must be more than 0s", u.ProgressDeadline)
	}
	if u.BatchDelay < 0 {
		d.errorf(join(p, "batchDelay"), "%s must not be negative", u.BatchDelay)
	}
	// An instance must stay healthy for minHealthyTime before its
	// healthyDeadline, and the rollout must wait for an instance at least
	// until that deadline. Each rule blames the field the spec gave: the
	// other one may be a default the author never saw.
	if u.MinHealthyTime >= 0 && u.HealthyDeadline > 0 && u.MinHealthyTime >= u.HealthyDeadline {
		if d.set[minHealthy] || !d.set[healthy] {
			d.errorf(minHealthy, "%s is not shorter than the %s; an updated instance must be healthy for minHealthyTime within its healthyDeadline", u.MinHealthyTime, d.named(healthy, "healthyDeadline", u.HealthyDeadline))
		} else {
			d.errorf(healthy, "%s is not longer than the %s; an updated instance must be healthy for minHealthyTime within its healthyDeadline", u.HealthyDeadline, d.named(minHealthy, "minHealthyTime", u.MinHealthyTime))
		}
	}
	if u.HealthyDeadline > 0 && u.ProgressDeadline > 0 && u.ProgressDeadline < u.HealthyDeadline {
		if d.set[progress] || !d.set[healthy] {
			d.errorf(progress, "%s is shorter than the %s; the rollout would give up before an instance's healthyDeadline", u.ProgressDeadline, d.named(healthy, "healthyDeadline", u.HealthyDeadline))
		} else {
			d.errorf(healthy, "%s is longer than the %s; the rollout would give up before an instance's healthyDeadline", u.HealthyDeadline, d.named(progress, "progressDeadline", u.ProgressDeadline))
		}
	}

	if r := u.MaxFailureRatio; r < 0 || r > 1 {
		d.errorf(join(p, "maxFailureRatio"), "%s is not between 0 and 1; 0.1 lets a tenth of the instances fail", strconv.FormatFloat(r, 'g', -1, 64))
	}

	op := join(p, "order")
	switch u.Order {
	case OrderStopFirst:
	case OrderStartFirst:
		// The new instance starts next to the old one, on the same host,
		// and both cannot bind one host port.
		for i, pt := range s.Container.Ports {
			if pt.HostPort >= 1 && pt.HostPort <= 65535 {
				d.errorf(op, "start-first cannot run two instances on one host with fixed hostPort %d (spec.container.ports[%d]); use stop-first, or leave hostPort out", pt.HostPort, i)
				break
			}
		}
	default:
		d.errorf(op, "%s is not an order; use stop-first or start-first", quote(string(u.Order)))
	}
}

// checkBatch checks a batch size or maxUnavailable: at least one instance,
// as a count or a percentage up to 100%. why explains the minimum.
func (d *document) checkBatch(p string, v IntOrPercent, why string) {
	switch {
	case v.Value < 0:
		d.errorf(p, "%s is negative; write a count like 2 or a percentage like \"25%%\"", written(v))
	case v.Percent && v.Value > 100:
		d.errorf(p, "%s is over 100%%", written(v))
	case v.Percent && v.Value < 1:
		d.errorf(p, "%s must be at least 1%%%s", written(v), why)
	case v.Value < 1:
		d.errorf(p, "%s must be at least 1%s", written(v), why)
	}
}

// written is v for a message: a percentage quoted, as the string it is, and a
// count bare, as the number it is.
func written(v IntOrPercent) string {
	if v.Percent {
		return quote(v.String())
	}
	return v.String()
}

// named describes the duration field at p for a message about another one,
// saying when it is a default rather than something the spec says.
func (d *document) named(p, name string, v Duration) string {
	if d.set[p] {
		return name + " " + v.String()
	}
	return "default " + name + " " + v.String()
}

// ValidateName says what is wrong with a name of the kind deployments and
// projects have; what names it (such as "project") starts the message.
func ValidateName(what, name string) error {
	d := &document{}
	d.checkName(what, name)
	return d.errs.plain()
}

// ValidateSelector says what is wrong with a node selector given outside
// a spec (a project's); what names it.
func ValidateSelector(what string, s Selector) error {
	d := &document{}
	d.checkSelector(what, s)
	return d.errs.plain()
}
