// Package benchenv holds what the benchmark programs under bench/ need from
// the machine alike: free loopback ports and the end of a process's log.
package benchenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
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
