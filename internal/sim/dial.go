package sim

import (
	"context"
	"fmt"
	"net"
)

// newDialers returns a dialer from each source address, after checking
// that the address is one of this host's: an agent dialing from a foreign
// address would retry for ever.
func newDialers(sourceIPs []string) ([]func(context.Context, string) (net.Conn, error), error) {
	var dialers []func(context.Context, string) (net.Conn, error)
	for _, s := range sourceIPs {
		ip := net.ParseIP(s)
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip})
		if err != nil {
			return nil, fmt.Errorf("%w: source address %s is not usable on this host: %v", ErrConfig, s, err)
		}
		ln.Close()
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Control: bindAddressNoPort}
		dialers = append(dialers, func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		})
	}
	return dialers, nil
}
