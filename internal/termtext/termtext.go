// Package termtext makes text that others wrote safe to show on a
// terminal. Nodes report strings (their hostname, a host error, an
// instance's last error) that reach operators' terminals through the CLI
// and the events quoting them: an escape sequence in one could retitle
// the terminal, clear it, rewrite a line or hide text, and a bidirectional
// override reorders what is shown (security review, finding 13). The
// server escapes what nodes send before it keeps it; the CLI escapes what
// it prints, whatever server it talks to.
package termtext

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with its control characters (C0, DEL, C1), its
// bidirectional controls and its invalid UTF-8 bytes escaped as Go writes
// them in a quoted string ("\x1b", "\u202e", "\xff"), cut to at most max
// bytes with "…" at the end when it is longer (no bound when max <= 0),
// and whether it changed s. An escape is never cut in two.
func Escape(s string, max int) (string, bool) {
	if (max <= 0 || len(s) <= max) && safe(s) {
		return s, false
	}
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		esc := s[:n]
		switch {
		case r == utf8.RuneError && n == 1:
			esc = fmt.Sprintf(`\x%02x`, s[0])
		case unsafeRune(r):
			esc = fmt.Sprintf("%+q", r)
			esc = esc[1 : len(esc)-1] // '\x1b' → \x1b
		}
		if max > 0 && b.Len()+len(esc) > max-len("…") {
			b.WriteString("…")
			break
		}
		b.WriteString(esc)
		s = s[n:]
	}
	return b.String(), true
}

// safe reports whether s is valid UTF-8 free of what unsafeRune finds.
func safe(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	return strings.IndexFunc(s, unsafeRune) < 0
}

// unsafeRune reports whether r may steer a terminal: a control character
// (escape sequences, carriage returns) or a bidirectional control.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
}
