package spec

import (
	"reflect"
	"strings"
	"testing"
)

func TestSelectorMatches(t *testing.T) {
	node := map[string]string{"zone": "eu-1", "disk": "ssd", "gpu": ""}
	tests := []struct {
		name string
		sel  Selector
		want bool
	}{
		{"zero selector", Selector{}, true},
		{"zero selector, no labels", Selector{}, true},
		{"matchLabels equal", Selector{MatchLabels: map[string]string{"zone": "eu-1"}}, true},
		{"matchLabels all must hold", Selector{MatchLabels: map[string]string{"zone": "eu-1", "disk": "hdd"}}, false},
		{"matchLabels absent key", Selector{MatchLabels: map[string]string{"rack": "1"}}, false},
		{"matchLabels empty value", Selector{MatchLabels: map[string]string{"gpu": ""}}, true},
		{"In", sel("zone", OpIn, "eu-1", "eu-2"), true},
		{"In other value", sel("zone", OpIn, "us-1"), false},
		{"In absent key", sel("rack", OpIn, "1"), false},
		{"NotIn", sel("zone", OpNotIn, "us-1"), true},
		{"NotIn listed value", sel("zone", OpNotIn, "eu-1"), false},
		{"NotIn absent key", sel("rack", OpNotIn, "1"), true},
		{"Exists", sel("disk", OpExists), true},
		{"Exists with empty value", sel("gpu", OpExists), true},
		{"Exists absent key", sel("rack", OpExists), false},
		{"DoesNotExist", sel("rack", OpDoesNotExist), true},
		{"DoesNotExist present key", sel("disk", OpDoesNotExist), false},
		{"unknown operator matches nothing", sel("zone", "Equals", "eu-1"), false},
		{
			"labels and expressions together",
			Selector{
				MatchLabels:      map[string]string{"disk": "ssd"},
				MatchExpressions: []Requirement{{Key: "zone", Operator: OpIn, Values: []string{"eu-1"}}, {Key: "rack", Operator: OpDoesNotExist}},
			},
			true,
		},
		{
			"one expression fails",
			Selector{MatchExpressions: []Requirement{{Key: "zone", Operator: OpIn, Values: []string{"eu-1"}}, {Key: "disk", Operator: OpDoesNotExist}}},
			false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := node
			if strings.Contains(tt.name, "no labels") {
				labels = nil
			}
			if got := tt.sel.Matches(labels); got != tt.want {
				t.Errorf("Matches(%v) = %v; want %v", labels, got, tt.want)
			}
		})
	}
}

func sel(key string, op Operator, values ...string) Selector {
	return Selector{MatchExpressions: []Requirement{{Key: key, Operator: op, Values: values}}}
}

func TestValidateLabelKey(t *testing.T) {
	tests := []struct {
		key  string
		want string // "" for valid
	}{
		{"app", ""},
		{"App_1.x-y", ""},
		{"example.com/tier", ""},
		{"a.b-c.d/Name", ""},
		{strings.Repeat("a", 63), ""},
		{"", "must not be empty"},
		{strings.Repeat("a", 64), "is 64 characters; at most 63 are allowed"},
		{"example.com/" + strings.Repeat("a", 64), "name is 64 characters; at most 63 are allowed"},
		{"a b", "contains ' '; only letters, digits, '-', '_' and '.' are allowed"},
		{"_app", "must start and end with a letter or digit"},
		{"app.", "must start and end with a letter or digit"},
		{"example.com/-x", "name must start and end with a letter or digit"},
		{"a/b/c", "must have at most one '/'"},
		{"example.com/", "name after the '/' must not be empty"},
		{"/app", `prefix "" must not be empty`},
		{"Example.com/app", `prefix "Example.com" is not a DNS subdomain: contains 'E'; only lowercase letters, digits, '-' and '.' are allowed`},
		{"example..com/app", `prefix "example..com" is not a DNS subdomain: parts between dots must not be empty`},
		{"-example.com/app", `prefix "-example.com" is not a DNS subdomain: part "-example" must start and end with a letter or digit`},
		{strings.Repeat("a", 64) + ".com/app", `prefix "` + strings.Repeat("a", 64) + `.com" is not a DNS subdomain: part "` + strings.Repeat("a", 64) + `" is 64 characters; at most 63 are allowed`},
		{strings.Repeat("a.", 127) + "a/app", `prefix "` + strings.Repeat("a.", 50) + `"... is 255 characters; at most 253 are allowed`},
		{"zone/é", "name contains 'é'; only letters, digits, '-', '_' and '.' are allowed"},
	}
	for _, tt := range tests {
		err := ValidateLabelKey(tt.key)
		if got := errString(err); got != tt.want {
			t.Errorf("ValidateLabelKey(%q) = %q; want %q", tt.key, got, tt.want)
		}
	}
}

func TestValidateLabelValue(t *testing.T) {
	tests := []struct {
		value string
		want  string
	}{
		{"", ""},
		{"v1.2_3-x", ""},
		{"A", ""},
		{strings.Repeat("v", 63), ""},
		{strings.Repeat("v", 64), "is 64 characters; at most 63 are allowed"},
		{"eu 1", "contains ' '; only letters, digits, '-', '_' and '.' are allowed"},
		{"a/b", "contains '/'; only letters, digits, '-', '_' and '.' are allowed"},
		{".hidden", "must start and end with a letter or digit"},
		{"x-", "must start and end with a letter or digit"},
	}
	for _, tt := range tests {
		err := ValidateLabelValue(tt.value)
		if got := errString(err); got != tt.want {
			t.Errorf("ValidateLabelValue(%q) = %q; want %q", tt.value, got, tt.want)
		}
	}
}

func TestParseLabels(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr string
	}{
		{in: "", want: map[string]string{}},
		{in: "  ", want: map[string]string{}},
		{in: "role=web", want: map[string]string{"role": "web"}},
		{in: "role=web,zone=eu-1", want: map[string]string{"role": "web", "zone": "eu-1"}},
		{in: " role = web , example.com/tier=db", want: map[string]string{"role": "web", "example.com/tier": "db"}},
		{in: "gpu=", want: map[string]string{"gpu": ""}},
		{in: "role", wantErr: `label "role": want key=value`},
		{in: "role=web,", wantErr: `labels "role=web,": empty label between commas`},
		{in: "a=1,,b=2", wantErr: `labels "a=1,,b=2": empty label between commas`},
		{in: "=web", wantErr: `label "=web": invalid key "": must not be empty`},
		{in: "my role=web", wantErr: `label "my role=web": invalid key "my role": contains ' '; only letters, digits, '-', '_' and '.' are allowed`},
		{in: "role=web/db", wantErr: `label "role=web/db": invalid value "web/db": contains '/'; only letters, digits, '-', '_' and '.' are allowed`},
		{in: "a=1=2", wantErr: `label "a=1=2": invalid value "1=2": contains '='; only letters, digits, '-', '_' and '.' are allowed`},
		{in: "role=web,role=db", wantErr: `label "role=db": key "role" is given twice`},
	}
	for _, tt := range tests {
		got, err := ParseLabels(tt.in)
		if errString(err) != tt.wantErr {
			t.Errorf("ParseLabels(%q) error = %q; want %q", tt.in, errString(err), tt.wantErr)
			continue
		}
		if err == nil && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseLabels(%q) = %v; want %v", tt.in, got, tt.want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestSelectorAnd(t *testing.T) {
	dep := Selector{MatchLabels: map[string]string{"role": "web"}}
	proj := Selector{MatchLabels: map[string]string{"team": "a"}, MatchExpressions: []Requirement{{Key: "zone", Operator: OpNotIn, Values: []string{"z9"}}}}
	both := dep.And(proj)
	for _, tt := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"role": "web", "team": "a"}, true},
		{map[string]string{"role": "web", "team": "b"}, false},
		{map[string]string{"role": "db", "team": "a"}, false},
		{map[string]string{"role": "web", "team": "a", "zone": "z9"}, false},
	} {
		if got := both.Matches(tt.labels); got != tt.want {
			t.Errorf("%v: %v; want %v", tt.labels, got, tt.want)
		}
	}
	if len(dep.MatchExpressions) != 0 {
		t.Error("And changed its receiver")
	}
}
