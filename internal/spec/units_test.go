package spec

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteSize
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "128Mi", want: 128 << 20},
		{in: "1Ki", want: 1024},
		{in: "2Gi", want: 2 << 30},
		{in: "1Ti", want: 1 << 40},
		{in: "512M", want: 512e6},
		{in: "1K", want: 1000},
		{in: "3G", want: 3e9},
		{in: "1T", want: 1e12},
		{in: "8388607Ti", want: 8388607 << 40},
		{in: "", wantErr: `"" is not a size; write a whole number with an optional unit Ki, Mi, Gi, Ti, K, M, G or T, like "128Mi"`},
		{in: "Mi", wantErr: `"Mi" is not a size; write a whole number with an optional unit Ki, Mi, Gi, Ti, K, M, G or T, like "128Mi"`},
		{in: "1.5Gi", wantErr: `"1.5Gi" is not a size; write a whole number with an optional unit Ki, Mi, Gi, Ti, K, M, G or T, like "128Mi"`},
		{in: "-1Mi", wantErr: `"-1Mi" is not a size; write a whole number with an optional unit Ki, Mi, Gi, Ti, K, M, G or T, like "128Mi"`},
		{in: "512m", wantErr: `"512m" is not a size; write a whole number with an optional unit Ki, Mi, Gi, Ti, K, M, G or T, like "128Mi"`},
		{in: "1 Gi", wantErr: `"1 Gi" is not a size; write a whole number with an optional unit Ki, Mi, Gi, Ti, K, M, G or T, like "128Mi"`},
		{in: "8388608Ti", wantErr: `"8388608Ti" is too large`},
		{in: "99999999999999999999", wantErr: `"99999999999999999999" is too large`},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if errString(err) != tt.wantErr {
			t.Errorf("ParseByteSize(%q) error = %q; want %q", tt.in, errString(err), tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d; want %d", tt.in, got, tt.want)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	tests := []struct {
		in   ByteSize
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1000, "1000"},
		{1024, "1Ki"},
		{1536, "1536"},
		{1536 << 10, "1536Ki"},
		{128 << 20, "128Mi"},
		{1 << 30, "1Gi"},
		{3 << 40, "3Ti"},
		{1 << 50, "1024Ti"},
		{1e9, "1000000000"},
		{math.MaxInt64, "9223372036854775807"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("ByteSize(%d).String() = %q; want %q", int64(tt.in), got, tt.want)
		}
		back, err := ParseByteSize(tt.want)
		if err != nil || back != tt.in {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tt.want, back, err, tt.in)
		}
	}
}

func TestByteSizeJSON(t *testing.T) {
	b, err := json.Marshal(ByteSize(256 << 20))
	if err != nil || string(b) != `"256Mi"` {
		t.Errorf("json.Marshal(256Mi) = %s, %v; want \"256Mi\"", b, err)
	}
	tests := []struct {
		in      string
		want    ByteSize
		wantErr string
	}{
		{in: `"1Gi"`, want: 1 << 30},
		{in: `"1000"`, want: 1000},
		{in: `1048576`, want: 1 << 20},
		{in: `null`, want: 7},
		{in: `"lots"`, wantErr: `size: "lots" is not a size; write a whole number with an optional unit Ki, Mi, Gi, Ti, K, M, G or T, like "128Mi"`},
		{in: `-5`, wantErr: `size: "-5" is not a size; write a whole number with an optional unit Ki, Mi, Gi, Ti, K, M, G or T, like "128Mi"`},
		{in: `true`, wantErr: `size true: want a string like "128Mi" or a number of bytes`},
	}
	for _, tt := range tests {
		got := ByteSize(7)
		err := json.Unmarshal([]byte(tt.in), &got)
		if errString(err) != tt.wantErr {
			t.Errorf("json.Unmarshal(%s) error = %q; want %q", tt.in, errString(err), tt.wantErr)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("json.Unmarshal(%s) = %d; want %d", tt.in, got, tt.want)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second, 90 * time.Second, 1500 * time.Millisecond, 25 * time.Hour, time.Nanosecond} {
		b, err := json.Marshal(Duration(d))
		if err != nil {
			t.Fatal(err)
		}
		if want := `"` + d.String() + `"`; string(b) != want {
			t.Errorf("json.Marshal(%v) = %s; want %s", d, b, want)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || time.Duration(back) != d {
			t.Errorf("json.Unmarshal(%s) = %v, %v; want %v", b, back, err, d)
		}
	}
	tests := []struct {
		in      string
		want    Duration
		wantErr string
	}{
		{in: `"2m"`, want: Duration(2 * time.Minute)},
		{in: `null`, want: 7},
		{in: `"5"`, wantErr: `duration "5": want a number with a unit, like "10s"`},
		{in: `5`, wantErr: `duration 5: want a string like "10s"`},
	}
	for _, tt := range tests {
		got := Duration(7)
		err := json.Unmarshal([]byte(tt.in), &got)
		if errString(err) != tt.wantErr {
			t.Errorf("json.Unmarshal(%s) error = %q; want %q", tt.in, errString(err), tt.wantErr)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("json.Unmarshal(%s) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

// zeroUpdate is the JSON of the zero Update.
const zeroUpdate = `"update":{"batchSize":0,"maxUnavailable":0,"canary":0,"autoPromote":false,` +
	`"minHealthyTime":"0s","healthyDeadline":"0s","progressDeadline":"0s","maxFailureRatio":0,` +
	`"autoRollback":false,"order":"","prePull":false,"batchDelay":"0s"}`

// TestDeploymentSpecJSON checks that replicas is written in replicated mode
// even when zero, and never in global mode.
func TestDeploymentSpecJSON(t *testing.T) {
	tests := []struct {
		spec DeploymentSpec
		want string
	}{
		{
			DeploymentSpec{Mode: ModeGlobal},
			`{"mode":"global","selector":{},"container":{"image":"","resources":{},"restartPolicy":""},` + zeroUpdate + `}`,
		},
		{
			DeploymentSpec{Mode: ModeReplicated},
			`{"mode":"replicated","selector":{},"container":{"image":"","resources":{},"restartPolicy":""},` + zeroUpdate + `,"replicas":0}`,
		},
		{
			DeploymentSpec{Mode: ModeReplicated, Replicas: 4},
			`{"mode":"replicated","selector":{},"container":{"image":"","resources":{},"restartPolicy":""},` + zeroUpdate + `,"replicas":4}`,
		},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tt.want {
			t.Errorf("json.Marshal(%+v) = %s; want %s", tt.spec, b, tt.want)
		}
		var back DeploymentSpec
		if err := json.Unmarshal(b, &back); err != nil || back.Replicas != tt.spec.Replicas || back.Mode != tt.spec.Mode {
			t.Errorf("json.Unmarshal(%s) = %+v, %v; want %+v", b, back, err, tt.spec)
		}
	}
}

func TestParseIntOrPercent(t *testing.T) {
	tests := []struct {
		in      string
		want    IntOrPercent
		wantErr string
	}{
		{in: "0", want: IntOrPercent{}},
		{in: "2", want: IntOrPercent{Value: 2}},
		{in: "007", want: IntOrPercent{Value: 7}},
		{in: "25%", want: IntOrPercent{Value: 25, Percent: true}},
		{in: "0%", want: IntOrPercent{Percent: true}},
		{in: "150%", want: IntOrPercent{Value: 150, Percent: true}},
		{in: "", wantErr: `"" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`},
		{in: "%", wantErr: `"%" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`},
		{in: "abc", wantErr: `"abc" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`},
		{in: "10.5%", wantErr: `"10.5%" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`},
		{in: "-1", wantErr: `"-1" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`},
		{in: "+1", wantErr: `"+1" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`},
		{in: "25 %", wantErr: `"25 %" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`},
		{in: "25%%", wantErr: `"25%%" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`},
		{in: "99999999999999999999%", wantErr: `"99999999999999999999%" is too large`},
	}
	for _, tt := range tests {
		got, err := ParseIntOrPercent(tt.in)
		if errString(err) != tt.wantErr {
			t.Errorf("ParseIntOrPercent(%q) error = %q; want %q", tt.in, errString(err), tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseIntOrPercent(%q) = %+v; want %+v", tt.in, got, tt.want)
		}
	}
}

func TestIntOrPercentOf(t *testing.T) {
	tests := []struct {
		v     IntOrPercent
		total int
		want  int
	}{
		{IntOrPercent{Value: 2}, 10, 2},
		{IntOrPercent{Value: 2}, 0, 2},
		{IntOrPercent{Value: 5}, 3, 5}, // a count is not capped
		{IntOrPercent{Value: 10, Percent: true}, 6, 1},
		{IntOrPercent{Value: 25, Percent: true}, 6, 2},
		{IntOrPercent{Value: 25, Percent: true}, 4, 1},
		{IntOrPercent{Value: 25, Percent: true}, 5, 2},
		{IntOrPercent{Value: 25, Percent: true}, 100, 25},
		{IntOrPercent{Value: 33, Percent: true}, 3, 1},
		{IntOrPercent{Value: 34, Percent: true}, 3, 2},
		{IntOrPercent{Value: 50, Percent: true}, 1, 1},
		{IntOrPercent{Value: 1, Percent: true}, 1, 1},
		{IntOrPercent{Value: 1, Percent: true}, 1000, 10},
		{IntOrPercent{Value: 1, Percent: true}, 1001, 11},
		{IntOrPercent{Value: 100, Percent: true}, 7, 7},
		{IntOrPercent{Value: 25, Percent: true}, 0, 0},
		{IntOrPercent{Value: 0, Percent: true}, 10, 0},
	}
	for _, tt := range tests {
		if got := tt.v.Of(tt.total); got != tt.want {
			t.Errorf("%v.Of(%d) = %d; want %d", tt.v, tt.total, got, tt.want)
		}
	}
}

func TestIntOrPercentJSON(t *testing.T) {
	for _, tt := range []struct {
		v    IntOrPercent
		want string
	}{
		{IntOrPercent{}, `0`},
		{IntOrPercent{Value: 3}, `3`},
		{IntOrPercent{Value: 25, Percent: true}, `"25%"`},
	} {
		b, err := json.Marshal(tt.v)
		if err != nil || string(b) != tt.want {
			t.Errorf("json.Marshal(%+v) = %s, %v; want %s", tt.v, b, err, tt.want)
		}
		var back IntOrPercent
		if err := json.Unmarshal(b, &back); err != nil || back != tt.v {
			t.Errorf("json.Unmarshal(%s) = %+v, %v; want %+v", b, back, err, tt.v)
		}
		if got := tt.v.String(); got != strings.Trim(tt.want, `"`) {
			t.Errorf("%+v.String() = %q; want %q", tt.v, got, strings.Trim(tt.want, `"`))
		}
	}
	tests := []struct {
		in      string
		want    IntOrPercent
		wantErr string
	}{
		{in: `2`, want: IntOrPercent{Value: 2}},
		{in: `"2"`, want: IntOrPercent{Value: 2}},
		{in: `"10%"`, want: IntOrPercent{Value: 10, Percent: true}},
		{in: `-1`, want: IntOrPercent{Value: -1}}, // read; Parse's validation rejects it
		{in: `null`, want: IntOrPercent{Value: 7}},
		{in: `2.5`, wantErr: `count or percentage 2.5: want a whole number like 2 or a string like "25%"`},
		{in: `true`, wantErr: `count or percentage true: want a whole number like 2 or a string like "25%"`},
		{in: `"abc"`, wantErr: `count or percentage: "abc" is not a whole number or percentage; write a count like 2 or a percentage like "25%"`},
	}
	for _, tt := range tests {
		got := IntOrPercent{Value: 7}
		err := json.Unmarshal([]byte(tt.in), &got)
		if errString(err) != tt.wantErr {
			t.Errorf("json.Unmarshal(%s) error = %q; want %q", tt.in, errString(err), tt.wantErr)
			continue
		}
		if err == nil && got != tt.want {
			t.Errorf("json.Unmarshal(%s) = %+v; want %+v", tt.in, got, tt.want)
		}
	}
}
