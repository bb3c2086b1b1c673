//go:build !unix

package server

// openFileLimit reports no limit where there is no RLIMIT_NOFILE: the
// server does not check one there.
func openFileLimit() (uint64, bool) { return 0, false }
