package debugsrv

import (
	"errors"
	"testing"
)

func TestListenRefusesWhatOthersCouldReach(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0", "192.0.2.1:0", "example.com:0"} {
		ln, err := Listen(addr, false)
		if err == nil {
			ln.Close()
		}
		if !errors.Is(err, ErrNotLoopback) {
			t.Errorf("Listen(%q) = %v; want ErrNotLoopback", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := Listen(addr, false)
		if err != nil {
			t.Errorf("Listen(%q): %v", addr, err)
			continue
		}
		ln.Close()
	}
	ln, err := Listen("0.0.0.0:0", true)
	if err != nil {
		t.Fatalf("Listen with allowRemote: %v", err)
	}
	ln.Close()
}
