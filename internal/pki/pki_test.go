package pki

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// newTestCA creates a CA in a fresh temporary dir.
func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, _, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatalf("LoadOrCreateCA: %v", err)
	}
	return ca
}

// newTestIdentity enrolls node nodeID with ca as an agent does, with a
// certificate valid for ttl.
func newTestIdentity(t *testing.T, ca *CA, nodeID string, ttl time.Duration) *Identity {
	t.Helper()
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignNode(csr, nodeID, 0, ttl)
	if err != nil {
		t.Fatalf("SignNode: %v", err)
	}
	id, err := SaveIdentity(t.TempDir(), key, certPEM, ca.CertPEM())
	if err != nil {
		t.Fatalf("SaveIdentity: %v", err)
	}
	return id
}

// newTestServerCert issues a server certificate of ca for the default hosts.
func newTestServerCert(t *testing.T, ca *CA) tls.Certificate {
	t.Helper()
	cert, err := ca.ServerCertificate(nil, time.Hour)
	if err != nil {
		t.Fatalf("ServerCertificate: %v", err)
	}
	return cert
}

// handshake makes one TLS connection over a loopback listener and returns
// the server's view of it and each side's error. After a handshake both
// sides exchange a byte, because TLS 1.3 lets the client finish its
// handshake before the server has judged the client's certificate: the
// client learns of a rejection on its first read.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (state tls.ConnectionState, serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		state tls.ConnectionState
		err   error
	}
	results := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			results <- result{err: err}
			return
		}
		defer conn.Close()
		if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			results <- result{err: err}
			return
		}
		tc := tls.Server(conn, serverCfg)
		if err := tc.Handshake(); err != nil {
			results <- result{err: err}
			return
		}
		buf := make([]byte, 1)
		if _, err := io.ReadFull(tc, buf); err != nil {
			results <- result{err: err}
			return
		}
		_, err = tc.Write(buf)
		results <- result{state: tc.ConnectionState(), err: err}
	}()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(conn, clientCfg)
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = tc.Write([]byte{1})
	}
	if clientErr == nil {
		_, clientErr = io.ReadFull(tc, make([]byte, 1))
	}
	conn.Close()
	res := <-results
	return res.state, res.err, clientErr
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}
