package server

import (
	"context"
	"sync"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentproto"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/controller"
	"github.com/dockfleet/dockfleet/internal/fanout"
	"github.com/dockfleet/dockfleet/internal/liveness"
	"github.com/dockfleet/dockfleet/internal/restapi"
	"github.com/dockfleet/dockfleet/internal/store"
)

// fleet wires the parts that keep the server's nodes running what they
// should, each with one owner and its own lock: live (package liveness)
// knows which nodes are up, out (package fanout) holds the agents' streams
// and what each node was last sent, and ctl (package controller) places
// instances, steps rollouts and decides what each node runs. The REST API
// (package restapi) and the agent service (package agentsvc) are given the
// parts and fleet's few methods below.
type fleet struct {
	live *liveness.Registry
	out  *fanout.Fanout
	ctl  *controller.Controller
	// cluster, on PostgreSQL, makes this server one replica of several:
	// the controller and liveness decisions run only while it leads.
	cluster *cluster
}

// newFleet loads the nodes of st and makes the parts; events wakes the
// API's event followers when the controller writes events. cl is nil for
// a single server.
func newFleet(ctx context.Context, st store.Store, cfg Config, events *restapi.EventBell, cl *cluster) (*fleet, error) {
	clock := cfg.Clock
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	f := &fleet{out: fanout.New(clock), cluster: cl}
	var err error
	f.live, err = liveness.New(ctx, st, liveness.Config{HeartbeatInterval: cfg.HeartbeatInterval, MissedHeartbeats: cfg.MissedHeartbeats,
		Clock: clock, Logger: cfg.Logger,
		// A node that comes or goes changes where instances may run.
		OnChange: func(string) { f.ctl.Need(controller.Place) },
		// A draining node is drained once its agent removed its containers.
		OnEmptied: f.emptied,
		Replica:   cl != nil})
	if err != nil {
		return nil, err
	}
	ccfg := controller.Config{RescheduleAfter: cfg.RescheduleAfter, PrePullParallelism: cfg.PrePullParallelism,
		ImagePolicy: cfg.ImagePolicy, Clock: clock, Logger: cfg.Logger, OnEvents: events.Notify}
	if cl != nil {
		ccfg.Cluster = cl
	}
	f.ctl = controller.New(st, f.live, f.out, ccfg)
	return f, nil
}

// emptied tells the controller, or the leader, that node id's agent
// reports running no container.
func (f *fleet) emptied(id string) {
	if f.cluster != nil && !f.cluster.Leading() {
		f.cluster.Report(id, &agentproto.AgentMessage{Msg: &agentproto.AgentMessage_Heartbeat{Heartbeat: &agentproto.Heartbeat{
			Usage: &agentproto.Usage{Containers: 0}}}})
		return
	}
	f.ctl.Emptied()
}

// run runs the controller and the liveness checks until ctx ends: on a
// replica of several, only while it leads (cluster.run).
func (f *fleet) run(ctx context.Context) {
	if f.cluster != nil {
		f.cluster.run(ctx)
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { f.live.Run(ctx) })
	wg.Go(func() { f.ctl.Run(ctx) })
	wg.Wait()
}

// enrolled registers a newly enrolled node; it has a liveness window to connect.
func (f *fleet) enrolled(n api.Node) {
	f.live.Enrolled(n)
	f.ctl.Joined(n)
}

// revoked records that node id was revoked: its instances are lost.
func (f *fleet) revoked(id string) {
	if f.cluster != nil {
		f.cluster.gateChanged()
	}
	f.live.Revoked(id)
	f.ctl.Need(controller.ReloadNodes | controller.Place)
}

// removed forgets node id, which the store no longer has: its instances
// are gone, and placement moves what they ran.
func (f *fleet) removed(id string) {
	if f.cluster != nil {
		f.cluster.gateChanged()
	}
	f.live.Removed(id)
	f.out.Forget(id)
	f.ctl.Need(controller.ReloadNodes | controller.ReloadInstances | controller.Place)
}
