package spec

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Matches reports whether a node with these labels is selected: every
// matchLabels entry is present with its value, and every expression holds.
// The zero Selector matches every node.
func (s Selector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		if !r.Matches(labels) {
			return false
		}
	}
	return true
}

// And returns the selector that selects what both s and o select.
func (s Selector) And(o Selector) Selector {
	out := Selector{MatchLabels: s.MatchLabels, MatchExpressions: slices.Clone(s.MatchExpressions)}
	for _, k := range slices.Sorted(maps.Keys(o.MatchLabels)) {
		out.MatchExpressions = append(out.MatchExpressions, Requirement{Key: k, Operator: OpIn, Values: []string{o.MatchLabels[k]}})
	}
	out.MatchExpressions = append(out.MatchExpressions, o.MatchExpressions...)
	return out
}

// Matches reports whether labels satisfy r, as in Kubernetes: NotIn and
// DoesNotExist hold when the key is absent. An unknown operator matches
// nothing, since placing an instance nowhere is safer than everywhere.
func (r Requirement) Matches(labels map[string]string) bool {
	v, ok := labels[r.Key]
	switch r.Operator {
	case OpIn:
		return ok && slices.Contains(r.Values, v)
	case OpNotIn:
		return !ok || !slices.Contains(r.Values, v)
	case OpExists:
		return ok
	case OpDoesNotExist:
		return !ok
	}
	return false
}

// maxLabelName is the longest label name or value, as in Kubernetes, so that
// labels copied from there fit.
const maxLabelName = 63

// maxLabelPrefix is the longest DNS subdomain a label key's prefix may be.
const maxLabelPrefix = 253

// ValidateLabelKey checks a label key the way Kubernetes does: an optional
// prefix that is a lowercase DNS subdomain and a '/', then a name of at most
// 63 letters, digits, '-', '_' and '.', starting and ending with a letter or
// digit ("app", "example.com/tier"). The error does not repeat the key.
func ValidateLabelKey(key string) error {
	if key == "" {
		return errors.New("must not be empty")
	}
	name, subject := key, ""
	if prefix, rest, ok := strings.Cut(key, "/"); ok {
		if err := validateDNSSubdomain(prefix); err != nil {
			return fmt.Errorf("prefix %s %w", quote(prefix), err)
		}
		name, subject = rest, "name "
		if strings.Contains(name, "/") {
			return errors.New("must have at most one '/'")
		}
	}
	if name == "" {
		return errors.New("name after the '/' must not be empty")
	}
	if err := validateLabelText(name); err != nil {
		return fmt.Errorf("%s%w", subject, err)
	}
	return nil
}

// ValidateLabelValue checks a label value: empty, or at most 63 letters,
// digits, '-', '_' and '.', starting and ending with a letter or digit. The
// error does not repeat the value.
func ValidateLabelValue(value string) error {
	if value == "" {
		return nil
	}
	return validateLabelText(value)
}

// validateLabelText checks a label name or a non-empty value.
func validateLabelText(s string) error {
	if n := len(s); n > maxLabelName {
		return fmt.Errorf("is %d characters; at most %d are allowed", n, maxLabelName)
	}
	for _, c := range s {
		if !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("contains %q; only letters, digits, '-', '_' and '.' are allowed", c)
		}
	}
	if !isAlnum(rune(s[0])) || !isAlnum(rune(s[len(s)-1])) {
		return errors.New("must start and end with a letter or digit")
	}
	return nil
}

// validateDNSSubdomain checks a lowercase RFC 1123 subdomain like
// "example.com". The error reads after the name of what is checked.
func validateDNSSubdomain(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > maxLabelPrefix {
		return fmt.Errorf("is %d characters; at most %d are allowed", len(s), maxLabelPrefix)
	}
	for part := range strings.SplitSeq(s, ".") {
		if msg := dnsLabelProblem(part); msg != "" {
			return errors.New("is not a DNS subdomain: " + msg)
		}
	}
	return nil
}

// dnsLabelProblem says what keeps s from being one lowercase DNS label (RFC
// 1123: letters, digits and '-', starting and ending with a letter or digit,
// at most 63 characters), or "" when it is one.
func dnsLabelProblem(s string) string {
	switch {
	case s == "":
		return "parts between dots must not be empty"
	case len(s) > 63:
		return fmt.Sprintf("part %s is %d characters; at most 63 are allowed", quote(s), len(s))
	}
	for _, c := range s {
		if !isLowerAlnum(c) && c != '-' {
			return fmt.Sprintf("contains %q; only lowercase letters, digits, '-' and '.' are allowed", c)
		}
	}
	if s[0] == '-' || s[len(s)-1] == '-' {
		return fmt.Sprintf("part %s must start and end with a letter or digit", quote(s))
	}
	return ""
}

// ParseLabels reads labels written for a command-line flag, "k=v,k2=v2".
// Spaces around keys and values are dropped; a value may be empty ("k=").
// An empty string is no labels.
func ParseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return labels, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(item, "=")
		if strings.TrimSpace(item) == "" {
			return nil, fmt.Errorf("labels %s: empty label between commas", quote(s))
		}
		if !ok {
			return nil, fmt.Errorf("label %s: want key=value", quote(item))
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if err := ValidateLabelKey(k); err != nil {
			return nil, fmt.Errorf("label %s: invalid key %s: %w", quote(item), quote(k), err)
		}
		if err := ValidateLabelValue(v); err != nil {
			return nil, fmt.Errorf("label %s: invalid value %s: %w", quote(item), quote(v), err)
		}
		if _, dup := labels[k]; dup {
			return nil, fmt.Errorf("label %s: key %s is given twice", quote(item), quote(k))
		}
		labels[k] = v
	}
	return labels, nil
}

func isAlnum(c rune) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isLowerAlnum(c rune) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
}

// quote writes a value the user gave for an error message, cut short when it
// is long so that one bad field cannot flood the list.
func quote(s string) string {
	const maxRunes = 100
	if r := []rune(s); len(r) > maxRunes {
		return fmt.Sprintf("%q...", string(r[:maxRunes]))
	}
	return fmt.Sprintf("%q", s)
}
