// Package benchenv holds what the benchmark programs under bench/ need from
// the machine alike: free loopback ports, the processes they start (the
// real dockfleet binary) and their logs, and what Linux's /proc says of
// those processes and of the machine.
package benchenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	dfclient "github.com/dockfleet/dockfleet/internal/client"
)

// FreeAddr returns a loopback address with a port free at the time of asking.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Tail returns the last lines of a log, for error messages; "" if it cannot be read.
func Tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	ls := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return string(bytes.Join(ls, []byte("\n")))
}

// AdminClient is a REST client of the server whose data dir is dataDir
// and whose API listens on apiAddr, with the bootstrap admin token the
// server writes on first start; an error until it has written it.
func AdminClient(dataDir, apiAddr string) (*dfclient.Client, error) {
	tok, err := os.ReadFile(filepath.Join(dataDir, "admin.token"))
	if err != nil {
		return nil, err
	}
	return dfclient.New(dfclient.Config{Addr: "https://" + apiAddr, Token: strings.TrimSpace(string(tok)),
		CACertFile: filepath.Join(dataDir, "ca.crt")})
}
