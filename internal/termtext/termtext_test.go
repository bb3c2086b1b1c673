package termtext

import (
	"strings"
	"testing"
)

func TestEscape(t *testing.T) {
	tests := []struct {
		name, in string
		max      int
		want     string
		changed  bool
	}{
		{name: "plain", in: "docker 27.1", max: 256, want: "docker 27.1"},
		{name: "unicode", in: "höst-ü 日本", max: 256, want: "höst-ü 日本"},
		{name: "escape sequences", in: "\x1b]0;owned\x07\x1b[2Jhost", max: 256, want: `\x1b]0;owned\a\x1b[2Jhost`, changed: true},
		{name: "line rewrite", in: "\x1b[2K\rall good", max: 256, want: `\x1b[2K\rall good`, changed: true},
		{name: "tab and DEL", in: "a\tb\x7f", want: `a\tb\x7f`, changed: true},
		{name: "C1", in: "c1\u009b", want: `c1\u009b`, changed: true},
		{name: "bidi override", in: "a\u202eb", max: 256, want: `a\u202eb`, changed: true},
		{name: "invalid UTF-8", in: "a\xffb", max: 256, want: `a\xffb`, changed: true},
		{name: "no bound", in: strings.Repeat("x", 3000), want: strings.Repeat("x", 3000)},
		{name: "cut", in: strings.Repeat("x", 300), max: 256, want: strings.Repeat("x", 253) + "…", changed: true},
		{name: "cut between runes", in: strings.Repeat("é", 200), max: 256, want: strings.Repeat("é", 126) + "…", changed: true},
		{name: "cut before an escape", in: strings.Repeat("x", 250) + "\x1b", max: 256, want: strings.Repeat("x", 250) + "…", changed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := Escape(tt.in, tt.max)
			if got != tt.want || changed != tt.changed {
				t.Errorf("Escape(%q, %d) = %q, %v; want %q, %v", tt.in, tt.max, got, changed, tt.want, tt.changed)
			}
			if tt.max > 0 && len(got) > tt.max {
				t.Errorf("Escape(%q, %d) is %d bytes; want %d at most", tt.in, tt.max, len(got), tt.max)
			}
		})
	}
}
