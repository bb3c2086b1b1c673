package spec

import "time"

// Defaults, and why. docs/spec.md repeats them for users; keep the two in step.
const (
	// defaultProject is the project every installation has, so that a spec
	// need not name one before projects matter to its user.
	defaultProject = "default"
	// defaultMode is global because dockfleet's first job is an agent or
	// service on every matching host.
	defaultMode = ModeGlobal
	// defaultReplicas is 1 in replicated mode: asking for replication but no
	// count most likely means "run it once, somewhere".
	defaultReplicas = 1
	// defaultRestart is always: a fleet service should come back after a
	// crash or a host reboot without anyone looking.
	defaultRestart = RestartAlways
	// defaultProtocol is tcp, as in Docker.
	defaultProtocol = "tcp"
	// defaultInterval probes often enough to catch a failure within half a
	// minute (with defaultRetries) without loading thousands of instances.
	defaultInterval = Duration(10 * time.Second)
	// defaultTimeout is generous for a health endpoint on the same host yet
	// well under the interval, so probes never pile up.
	defaultTimeout = Duration(2 * time.Second)
	// defaultRetries rides out one slow answer without hiding a dead instance.
	defaultRetries = 3
	// defaultHTTPPath is the root, the one path every HTTP server answers.
	defaultHTTPPath = "/"

	// defaultMinHealthyTime is Nomad's: long enough for a process that
	// crashes soon after its first good probe to be caught in its batch.
	defaultMinHealthyTime = Duration(10 * time.Second)
	// defaultHealthyDeadline leaves room for a slow pull and start-up, and
	// is still short enough that a broken batch is noticed within minutes.
	defaultHealthyDeadline = Duration(5 * time.Minute)
	// defaultProgressDeadline is twice the healthy deadline: a rollout
	// waiting that long without one more healthy instance, e.g. for
	// unreachable nodes, needs someone to look.
	defaultProgressDeadline = Duration(10 * time.Minute)
	// defaultOrder is stop-first: it works with fixed host ports and never
	// runs two versions' containers on one host at once, as Docker users
	// expect of a replaced container.
	defaultOrder = OrderStopFirst
	// defaultAutoRollback is true, unlike Nomad's false: a fleet must not be
	// left half on a bad version because nobody was watching the rollout.
	defaultAutoRollback = true
)

// defaultBatchSize changes a quarter of the instances at a time: a rollout of
// any size takes four batches, and a bad version stops with three quarters
// of the fleet still on the old one.
var defaultBatchSize = IntOrPercent{Value: 25, Percent: true}

// applyDefaults fills in what the document left out. Fields given explicitly
// keep their value, even a zero one, so that validation can reject it rather
// than have a default hide the mistake.
func (d *document) applyDefaults(dep *Deployment) {
	if dep.Metadata.Project == "" {
		dep.Metadata.Project = defaultProject
	}
	s := &dep.Spec
	if s.Mode == "" {
		s.Mode = defaultMode
	}
	if s.Mode == ModeReplicated && !d.set["spec.replicas"] {
		s.Replicas = defaultReplicas
	}
	c := &s.Container
	if c.RestartPolicy == "" {
		c.RestartPolicy = defaultRestart
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = defaultProtocol
		}
	}
	d.defaultUpdate(&s.Update)
	hc := c.HealthCheck
	if hc == nil {
		return
	}
	const p = "spec.container.healthCheck."
	if !d.set[p+"interval"] {
		hc.Interval = defaultInterval
	}
	if !d.set[p+"timeout"] {
		// A probe may take no longer than the interval between probes, so a
		// short interval brings the default timeout down with it.
		hc.Timeout = defaultTimeout
		if hc.Interval > 0 && hc.Interval < hc.Timeout {
			hc.Timeout = hc.Interval
		}
	}
	if !d.set[p+"retries"] {
		hc.Retries = defaultRetries
	}
	// startPeriod's default is 0s, its zero value: probe failures count
	// from the first probe unless the spec asks for a grace period.
	if hc.HTTP != nil && hc.HTTP.Path == "" {
		hc.HTTP.Path = defaultHTTPPath
	}
}

// defaultUpdate fills in the rollout strategy. Zero values that are the
// defaults need nothing: canary 0 (none), autoPromote false (a canary is
// there to be looked at), maxFailureRatio 0 (any failure stops the rollout),
// prePull false and batchDelay 0s.
func (d *document) defaultUpdate(u *Update) {
	const p = "spec.update."
	if !d.set[p+"batchSize"] {
		u.BatchSize = defaultBatchSize
	}
	if !d.set[p+"maxUnavailable"] {
		// The batch size as given, so that "25%" stays a percentage of
		// however many instances there are: a whole batch may be down at
		// once, which stop-first order needs.
		u.MaxUnavailable = u.BatchSize
	}
	if !d.set[p+"minHealthyTime"] {
		u.MinHealthyTime = defaultMinHealthyTime
	}
	if !d.set[p+"healthyDeadline"] {
		u.HealthyDeadline = defaultHealthyDeadline
	}
	if !d.set[p+"progressDeadline"] {
		u.ProgressDeadline = defaultProgressDeadline
	}
	if !d.set[p+"autoRollback"] {
		u.AutoRollback = defaultAutoRollback
	}
	if !d.set[p+"order"] {
		u.Order = defaultOrder
	}
}
