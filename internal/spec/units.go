package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// String writes d the way time.Duration does, like "1m30s".
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a string like "10s", the form a spec uses, so that
// the JSON of a deployment can be applied again.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(d.String())
}

// UnmarshalJSON reads a string that time.ParseDuration accepts. A null leaves
// d unchanged, as encoding/json does for other types.
func (d *Duration) UnmarshalJSON(data []byte) error {
	if bytes.Equal(data, []byte("null")) {
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("duration %s: want a string like \"10s\"", data)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, like \"10s\"", s)
	}
	*d = Duration(v)
	return nil
}

// byteUnits are the suffixes a size may carry. Binary units come first so that
// String finds the largest one that divides a size exactly.
var byteUnits = []struct {
	suffix string
	size   int64
}{
	{"Ti", 1 << 40},
	{"Gi", 1 << 30},
	{"Mi", 1 << 20},
	{"Ki", 1 << 10},
	{"T", 1e12},
	{"G", 1e9},
	{"M", 1e6},
	{"K", 1e3},
}

// ParseByteSize reads a size written as a whole number of bytes with an
// optional unit: binary Ki, Mi, Gi, Ti (powers of 1024) or decimal K, M, G, T
// (powers of 1000), as in Kubernetes quantities. "128Mi", "1G" and "1048576"
// are sizes; "1.5Gi", "-1Mi" and "512m" are not.
func ParseByteSize(s string) (ByteSize, error) {
	digits, mult := s, int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(s, u.suffix) {
			digits, mult = strings.TrimSuffix(s, u.suffix), u.size
			break
		}
	}
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, fmt.Errorf("%s is not a size; write a whole number with an optional unit Ki, Mi, Gi, Ti, K, M, G or T, like \"128Mi\"", quote(s))
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%s is too large", quote(s))
	}
	return ByteSize(n * mult), nil
}

// String writes b in the shortest exact binary form, like "128Mi", or as a
// plain number of bytes when no binary unit divides it. ParseByteSize reads
// it back unchanged.
func (b ByteSize) String() string {
	if b > 0 {
		for _, u := range byteUnits[:4] {
			if int64(b)%u.size == 0 {
				return strconv.FormatInt(int64(b)/u.size, 10) + u.suffix
			}
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// MarshalJSON writes b as a string like "128Mi", the form a spec uses.
func (b ByteSize) MarshalJSON() ([]byte, error) {
	return json.Marshal(b.String())
}

// UnmarshalJSON reads a string that ParseByteSize accepts, or a plain JSON
// number of bytes. A null leaves b unchanged.
func (b *ByteSize) UnmarshalJSON(data []byte) error {
	if bytes.Equal(data, []byte("null")) {
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		var n json.Number
		if json.Unmarshal(data, &n) != nil {
			return fmt.Errorf("size %s: want a string like \"128Mi\" or a number of bytes", data)
		}
		s = n.String()
	}
	v, err := ParseByteSize(s)
	if err != nil {
		return fmt.Errorf("size: %w", err)
	}
	*b = v
	return nil
}

// MarshalJSON writes replicas whenever the mode is replicated, zero included:
// Parse defaults an absent replicas to 1, so a deployment scaled to zero must
// say so to come back unchanged.
func (s DeploymentSpec) MarshalJSON() ([]byte, error) {
	type plain DeploymentSpec // no MarshalJSON method, so no recursion
	if s.Mode != ModeReplicated {
		return json.Marshal(plain(s))
	}
	// The outer Replicas is shallower than the embedded one, so encoding/json
	// writes it instead, without omitempty.
	return json.Marshal(struct {
		plain
		Replicas int `json:"replicas"`
	}{plain(s), s.Replicas})
}

// ParseIntOrPercent reads a count written as a whole number, like "2", or a
// percentage written as a whole number and '%', like "25%". It does not check
// a range: "0" and "150%" are read, "-1", "10.5%" and "25 %" are not.
func ParseIntOrPercent(s string) (IntOrPercent, error) {
	digits, percent := strings.CutSuffix(s, "%")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return IntOrPercent{}, fmt.Errorf("%s is not a whole number or percentage; write a count like 2 or a percentage like \"25%%\"", quote(s))
	}
	n, err := strconv.Atoi(digits)
	if err != nil {
		return IntOrPercent{}, fmt.Errorf("%s is too large", quote(s))
	}
	return IntOrPercent{Value: n, Percent: percent}, nil
}

// String writes v as a spec does: "25%" for a percentage, "2" for a count.
func (v IntOrPercent) String() string {
	s := strconv.Itoa(v.Value)
	if v.Percent {
		s += "%"
	}
	return s
}

// Of is the number of instances v stands for out of total: a count as it
// is, whatever total is, and a percentage of total rounded up, so that any
// percentage above 0% of a non-empty deployment is at least one instance.
// 10% of 6 is 1, 25% of 6 is 2, 100% of 6 is 6, and any percentage of 0 is 0.
// A count larger than total is returned unchanged; callers cap it where a
// count above the total means "all of them".
func (v IntOrPercent) Of(total int) int {
	if !v.Percent {
		return v.Value
	}
	// Division truncates towards zero, which rounds a positive quotient
	// down; one more when there is a remainder rounds it up.
	n := v.Value * total
	q := n / 100
	if n%100 > 0 {
		q++
	}
	return q
}

// MarshalJSON writes a count as a JSON number and a percentage as a string
// like "25%", the forms a spec uses.
func (v IntOrPercent) MarshalJSON() ([]byte, error) {
	if v.Percent {
		return json.Marshal(v.String())
	}
	return json.Marshal(v.Value)
}

// UnmarshalJSON reads a whole JSON number as a count, or a string that
// ParseIntOrPercent accepts. A null leaves v unchanged.
func (v *IntOrPercent) UnmarshalJSON(data []byte) error {
	if bytes.Equal(data, []byte("null")) {
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		p, err := ParseIntOrPercent(s)
		if err != nil {
			return fmt.Errorf("count or percentage: %w", err)
		}
		*v = p
		return nil
	}
	var n int
	if err := json.Unmarshal(data, &n); err != nil {
		return fmt.Errorf("count or percentage %s: want a whole number like 2 or a string like \"25%%\"", data)
	}
	*v = IntOrPercent{Value: n}
	return nil
}
