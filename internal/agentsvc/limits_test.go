package agentsvc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func TestSource(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1234}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1234}, "192.0.2.7"},
		// One /64 is one host or site: it counts as one source.
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 1}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:bbbb::9"), Port: 2}, "2001:db8:1:2::"},
		{&net.UnixAddr{Name: "/tmp/x", Net: "unix"}, "invalid IP"},
	}
	for _, tt := range tests {
		if got := Source(tt.addr).String(); got != tt.want {
			t.Errorf("Source(%v) = %s; want %s", tt.addr, got, tt.want)
		}
	}
}

func TestSourceLimiter(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	l := newSourceLimiter[netip.Addr](rate.Every(time.Hour), 3)
	for i := range 3 {
		if !l.allow(a) {
			t.Fatalf("call %d from %s refused; want the burst of 3 allowed", i+1, a)
		}
	}
	if l.allow(a) {
		t.Errorf("call 4 from %s allowed; want it refused after the burst of 3", a)
	}
	if !l.empty(a) {
		t.Errorf("empty(%s) = false after its burst; want true", a)
	}
	if !l.allow(b) || l.empty(b) {
		t.Errorf("%s was limited by %s's calls; want a bucket of its own", b, a)
	}
}

// A source whose bucket has filled up again is forgotten.
func TestSourceLimiterForgetsIdleSources(t *testing.T) {
	busy, idle, next := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	l := newSourceLimiter[netip.Addr](rate.Every(time.Hour), 2)
	l.allow(busy)
	l.buckets[idle] = rate.NewLimiter(l.limit, l.burst) // full
	l.swept = time.Now().Add(-2 * sourceSweepInterval)
	l.allow(next)
	var got []netip.Addr
	for src := range l.buckets {
		got = append(got, src)
	}
	slices.SortFunc(got, netip.Addr.Compare)
	if want := []netip.Addr{busy, next}; !slices.Equal(got, want) {
		t.Errorf("buckets after a sweep: %v; want %v", got, want)
	}
}

func TestEnrollFailuresBlockTheirSourceOnly(t *testing.T) {
	l := NewLimits(LimitsConfig{SourceRate: 1, SourceBurst: 1, MessageRate: 1, MessageBurst: 1},
		slog.New(slog.DiscardHandler))
	from := func(ip string) context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(ip), Port: 5000}})
	}
	bad, good := from("192.0.2.1"), from("192.0.2.2")
	for i := range EnrollFailureBurst {
		if err := l.enrollBlocked(bad); err != nil {
			t.Fatalf("enrollment after %d failures refused: %v; want it tried", i, err)
		}
		l.enrollFailed(bad)
	}
	err := l.enrollBlocked(bad)
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "too many failed enrollments from 192.0.2.1") {
		t.Errorf("enrollment after %d failures: %v; want ResourceExhausted naming the source", EnrollFailureBurst, err)
	}
	if err := l.enrollBlocked(good); err != nil {
		t.Errorf("enrollment from another source: %v; want it tried", err)
	}
}

// The listener resets a connection over its source's rate before the
// server reads a byte of it, and lets other sources through.
func TestListenerResetsConnectionsOverTheRate(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	limits := NewLimits(LimitsConfig{SourceRate: 1e-9, SourceBurst: 1, MessageRate: 1, MessageBurst: 1},
		slog.New(slog.DiscardHandler))
	ln := limits.Listener(inner)
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	// dialFrom dials ln from the loopback address src.
	dialFrom := func(src string) (net.Conn, error) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		return d.DialContext(context.Background(), "tcp", ln.Addr().String())
	}
	dial := func(src string) net.Conn {
		t.Helper()
		c, err := dialFrom(src)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial("127.0.0.2")
	first := <-accepted
	defer first.Close()
	// The reset may come before the dial returns, or at the first read.
	refused, err := dialFrom("127.0.0.2")
	if err == nil {
		defer refused.Close()
		refused.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = refused.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("a connection over its source's rate: %v; want it reset", err)
	}
	dial("127.0.0.3")
	if c := <-accepted; c == nil || Source(c.RemoteAddr()).String() != "127.0.0.3" {
		t.Errorf("accepted %v; want the connection from 127.0.0.3", c)
	} else {
		c.Close()
	}
}
