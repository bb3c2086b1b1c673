//go:build unix

package sim

import "syscall"

// OpenFileLimit returns how many files this process may have open
// (RLIMIT_NOFILE's soft limit, which Go raises to the hard one at start),
// and whether it could tell. Each simulated agent holds one connection.
func OpenFileLimit() (uint64, bool) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, false
	}
	return uint64(l.Cur), true
}
