package spec

import (
	"encoding/json"
	"math"
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

// TestDeploymentSpecJSON checks that replicas is written in replicated mode
// even when zero, and never in global mode.
func TestDeploymentSpecJSON(t *testing.T) {
	tests := []struct {
		spec DeploymentSpec
		want string
	}{
		{
			DeploymentSpec{Mode: ModeGlobal},
			`{"mode":"global","selector":{},"container":{"image":"","resources":{},"restartPolicy":""}}`,
		},
		{
			DeploymentSpec{Mode: ModeReplicated},
			`{"mode":"replicated","selector":{},"container":{"image":"","resources":{},"restartPolicy":""},"replicas":0}`,
		},
		{
			DeploymentSpec{Mode: ModeReplicated, Replicas: 4},
			`{"mode":"replicated","selector":{},"container":{"image":"","resources":{},"restartPolicy":""},"replicas":4}`,
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
