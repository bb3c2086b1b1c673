package health

import (
	"errors"
	"testing"
	"time"
)

func TestMonitorObserve(t *testing.T) {
	t0 := time.Unix(1000, 0)
	fail := errors.New("status 500")
	type step struct {
		at      time.Duration // since t0
		err     error
		want    Status
		changed bool
	}
	tests := []struct {
		name        string
		retries     int
		startPeriod time.Duration
		steps       []step
	}{
		{"first success reports healthy once", 3, 0, []step{
			{0, nil, Status{Healthy: true}, true},
			{1, nil, Status{}, false},
		}},
		{"unhealthy after retries failures", 3, 0, []step{
			{0, fail, Status{}, false},
			{1, fail, Status{}, false},
			{2, fail, Status{Reason: "status 500"}, true},
			{3, fail, Status{}, false},
			{4, nil, Status{Healthy: true}, true},
		}},
		{"a success resets the count", 2, 0, []step{
			{0, nil, Status{Healthy: true}, true},
			{1, fail, Status{}, false},
			{2, nil, Status{}, false},
			{3, fail, Status{}, false},
			{4, fail, Status{Reason: "status 500"}, true},
		}},
		{"reason is the last failure's", 2, 0, []step{
			{0, errors.New("first"), Status{}, false},
			{1, errors.New("second"), Status{Reason: "second"}, true},
		}},
		{"failures in the start period do not count", 1, 10, []step{
			{0, fail, Status{}, false},
			{9, fail, Status{}, false},
			{10, fail, Status{Reason: "status 500"}, true},
		}},
		{"a success ends the start period", 1, 10, []step{
			{0, fail, Status{}, false},
			{1, nil, Status{Healthy: true}, true},
			{2, fail, Status{Reason: "status 500"}, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &monitor{retries: tt.retries, startEnds: t0.Add(tt.startPeriod)}
			for i, s := range tt.steps {
				got, changed := m.observe(t0.Add(s.at), s.err)
				if got != s.want || changed != s.changed {
					t.Errorf("step %d: got %+v, %t; want %+v, %t", i, got, changed, s.want, s.changed)
				}
			}
		})
	}
}
