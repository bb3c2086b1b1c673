package main

import (
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		ms := make([]phases, len(tt.in))
		for i, v := range tt.in {
			ms[i].Create = v
		}
		if got := median(ms, func(p phases) float64 { return p.Create }); got != tt.want {
			t.Errorf("median(%v) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

func TestReportRatiosAndTable(t *testing.T) {
	r := &report{N: 30, Batch: 5, Runs: 1, Check: "http", Parallel: 10, Measurements: map[string][]phases{},
		systems: allSystems, Targets: map[string]float64{"dockfleet/swarm": targetVsSwarm, "dockfleet/raw": targetVsRaw}}
	r.add(sysSwarm, measurement{Create: 10 * time.Second, Update: 20 * time.Second})
	r.add(sysDockfleet, measurement{Create: 6 * time.Second, Update: 12 * time.Second})
	r.add(sysRaw, measurement{Create: 4 * time.Second, Update: 10 * time.Second})
	r.compute()

	vsSwarm, vsRaw := r.Ratios["dockfleet/swarm"], r.Ratios["dockfleet/raw"]
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"dockfleet/swarm create", vsSwarm.Create, 0.6},
		{"dockfleet/swarm update", vsSwarm.Update, 0.6},
		{"dockfleet/swarm total", vsSwarm.Total, 0.6},
		{"dockfleet/raw create", vsRaw.Create, 1.5},
		{"dockfleet/raw update", vsRaw.Update, 1.2},
		{"dockfleet/raw total", vsRaw.Total, 18.0 / 14},
	} {
		if math.Abs(c.got-c.want) > 1e-9 {
			t.Errorf("%s = %v; want %v", c.name, c.got, c.want)
		}
	}

	// A ratio just over the target shows a third decimal rather than
	// round onto it: dockfleet's total becomes 0.7013 of swarm's.
	r.Measurements[sysDockfleet][0].Total = 30 * 0.7013
	r.compute()
	var b strings.Builder
	r.WriteTable(&b)
	out := b.String()
	for _, want := range []string{"0.60 (≤ 0.7 met)", "1.50 (≤ 1.2 MISSED)", "1.20 (≤ 1.2 met)", "6.00s", "21.04s", "0.701 (≤ 0.7 MISSED)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-systems", "raw,swarm", "-n", "10", "-batch", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.systems, ","); got != "swarm,raw" {
		t.Errorf("systems = %s; want swarm,raw (measured in a fixed order)", got)
	}
	for _, args := range [][]string{
		{"-n", "0"},
		{"-batch", "31"},
		{"-systems", "nomad"},
		{"-o", "yaml"},
		{"-check", "tcp"},
		{"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error; want one", args)
		}
	}
}
