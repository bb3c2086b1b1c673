package server

import (
	"context"
	"sync"

	"github.com/jonboulle/clockwork"

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
}

// newFleet loads the nodes of st and makes the parts; events wakes the
// API's event followers when the controller writes events.
func newFleet(ctx context.Context, st store.Store, cfg Config, events *restapi.EventBell) (*fleet, error) {
	clock := cfg.Clock
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	f := &fleet{out: fanout.New(clock)}
	var err error
	f.live, err = liveness.New(ctx, st, liveness.Config{HeartbeatInterval: cfg.HeartbeatInterval, MissedHeartbeats: cfg.MissedHeartbeats,
		Clock: clock, Logger: cfg.Logger,
		// A node that comes or goes changes where instances may run.
		OnChange: func(string) { f.ctl.Need(controller.Place) },
		// A draining node is drained once its agent removed its containers.
		OnEmptied: func(string) { f.ctl.Emptied() }})
	if err != nil {
		return nil, err
	}
	f.ctl = controller.New(st, f.live, f.out, controller.Config{RescheduleAfter: cfg.RescheduleAfter,
		PrePullParallelism: cfg.PrePullParallelism, ImagePolicy: cfg.ImagePolicy, Clock: clock, Logger: cfg.Logger, OnEvents: events.Notify})
	return f, nil
}

// run runs the controller and the liveness checks until ctx ends.
func (f *fleet) run(ctx context.Context) {
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
	f.live.Revoked(id)
	f.ctl.Need(controller.ReloadNodes | controller.Place)
}

// removed forgets node id, which the store no longer has: its instances
// are gone, and placement moves what they ran.
func (f *fleet) removed(id string) {
	f.live.Removed(id)
	f.out.Forget(id)
	f.ctl.Need(controller.ReloadNodes | controller.ReloadInstances | controller.Place)
}
