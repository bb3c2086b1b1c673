//go:build !unix

package sim

// OpenFileLimit reports that the limit is unknown where RLIMIT_NOFILE does not exist.
func OpenFileLimit() (uint64, bool) { return 0, false }
