//go:build !unix

package cli

import "io"

// terminalWidth is 0 where we cannot ask a terminal its size: progress is
// written a line per change there.
func terminalWidth(io.Writer) int { return 0 }
