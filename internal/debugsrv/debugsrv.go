// Package debugsrv serves Go's pprof profiles, for the server's and the
// simulator's --debug-addr.
package debugsrv

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
)

// ErrNotLoopback refuses a debug address that others could reach.
var ErrNotLoopback = errors.New("debug profiles are served over plain HTTP without authentication, so only on a loopback address (127.0.0.1:6060, [::1]:6060 or localhost:6060)")

// Handler serves /debug/pprof/ and its profiles.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Listen listens on addr for Handler. Profiles cost CPU to take and show
// the process's arguments and memory, with no authentication and no TLS,
// so an address that is not loopback (an empty host means every
// interface) is refused unless allowRemote says the operator means it.
func Listen(addr string, allowRemote bool) (net.Listener, error) {
	if !allowRemote {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("debug address %q: %w", addr, err)
		}
		if ip, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("debug address %q: %w", addr, ErrNotLoopback)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for debug profiles on %s: %w", addr, err)
	}
	// "localhost" may resolve to anything: judge the address bound.
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !allowRemote && !tcp.IP.IsLoopback() {
		ln.Close()
		return nil, fmt.Errorf("debug address %q is %s: %w", addr, tcp.IP, ErrNotLoopback)
	}
	return ln, nil
}
