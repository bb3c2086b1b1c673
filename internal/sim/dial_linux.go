package sim

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bindAddressNoPort sets IP_BIND_ADDRESS_NO_PORT on a socket about to be
// bound to a source address: the kernel then picks its port at connect
// time, by the whole 4-tuple, rather than at bind time among the ports
// free on that address for any destination. Tens of thousands of agents
// dialing one server need it, TIME_WAIT sockets of their enrollments
// included. It is best effort: without it the dial still works.
func bindAddressNoPort(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
}
