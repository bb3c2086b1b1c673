package faults

import (
	"io"
	"net"
	"sync"
	"testing"
)

// proxy forwards the connections to an address the test owns to a target
// (both unix sockets, or both TCP), so that a test can cut an agent off
// from its Docker daemon or from the server, and let it back.
type proxy struct {
	t       *testing.T
	network string
	addr    string // where the proxy listens
	target  string
	mu      sync.Mutex
	l       net.Listener
	conn    map[net.Conn]bool
	wg      sync.WaitGroup
}

// newProxy starts a proxy listening on addr for target, closed when the test
// ends.
func newProxy(t *testing.T, network, addr, target string) *proxy {
	p := &proxy{t: t, network: network, addr: addr, target: target, conn: map[net.Conn]bool{}}
	p.open()
	t.Cleanup(p.close)
	return p
}

// open listens on the proxy's address and forwards each connection to the
// target.
func (p *proxy) open() {
	p.t.Helper()
	l, err := net.Listen(p.network, p.addr)
	if err != nil {
		p.t.Fatalf("listening on the proxy's address %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial(p.network, p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conn[c], p.conn[d] = true, true
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(c, d)
			go p.pipe(d, c)
		}
	}()
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// close stops listening and cuts every forwarded connection: the target is
// gone for the client, as when dockerd or the server stops.
func (p *proxy) close() {
	p.mu.Lock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conn {
		c.Close()
	}
	clear(p.conn)
	p.mu.Unlock()
	p.wg.Wait()
}
