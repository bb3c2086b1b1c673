package cli

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/dockfleet/dockfleet/internal/datadir"
)

// The CLI keeps the session token of each server a user logged in to in
// the user's config dir, readable by the user alone, as docker login and
// kubectl do; --token and DOCKFLEET_TOKEN still win over it.

// credentialsFile is the file, in the config dir, of the saved sessions.
const credentialsFile = "credentials.json"

// session is one saved login.
type session struct {
	User      string    `json:"user"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// sessions are the saved logins by server address.
type sessions struct {
	Servers map[string]session `json:"servers"`
}

// configDir is where the CLI keeps its files: $DOCKFLEET_CONFIG_DIR, else
// dockfleet in the user's config dir ($XDG_CONFIG_HOME, ~/.config).
func (e *env) configDir() (string, error) {
	if d := e.getenv("DOCKFLEET_CONFIG_DIR"); d != "" {
		return d, nil
	}
	if d := e.getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "dockfleet"), nil
	}
	if h := e.getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "dockfleet"), nil
	}
	return "", errors.New("no config dir to keep the login in: set HOME, XDG_CONFIG_HOME or DOCKFLEET_CONFIG_DIR")
}

func (e *env) loadSessions() (sessions, string, error) {
	dir, err := e.configDir()
	if err != nil {
		return sessions{}, "", err
	}
	path := filepath.Join(dir, credentialsFile)
	s := sessions{Servers: map[string]session{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, path, nil
	}
	if err != nil {
		return s, path, fmt.Errorf("reading saved logins: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, path, fmt.Errorf("reading saved logins %s: %w (delete the file and log in again)", path, err)
	}
	if s.Servers == nil {
		s.Servers = map[string]session{}
	}
	return s, path, nil
}

// saveSessions writes s whole, readable by the user alone.
func saveSessions(path string, s sessions) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("saving the login: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := datadir.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving the login: %w", err)
	}
	return nil
}

// savedToken is the session token saved for the server at addr, "" if none.
func (e *env) savedToken(addr string) string {
	s, _, err := e.loadSessions()
	if err != nil {
		return ""
	}
	return s.Servers[addr].Token
}

// readPassword reads a password: from stdin whole when fromStdin (for
// scripts: echo "$PW" | dockfleet login --password-stdin), else with a
// prompt on the terminal, not echoed.
func (e *env) readPassword(prompt string, fromStdin bool) (string, error) {
	if fromStdin {
		b, err := io.ReadAll(io.LimitReader(e.stdin, 4096))
		if err != nil {
			return "", fmt.Errorf("reading the password from stdin: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return "", errors.New("no password on stdin")
		}
		return pw, nil
	}
	f, ok := e.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", usageErrorf("stdin is not a terminal to ask the password on: pass it on stdin with --password-stdin")
	}
	fmt.Fprint(e.stderr, prompt)
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(e.stderr)
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	return string(b), nil
}

// readLine asks for one line on the terminal (a user name).
func (e *env) readLine(prompt string) (string, error) {
	fmt.Fprint(e.stderr, prompt)
	line, err := bufio.NewReader(e.stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("reading from stdin: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// httpClientTrusting is an HTTP client that trusts the CA certificates of
// the PEM file caFile besides the system's: for an identity provider
// whose certificate a private CA signs.
func httpClientTrusting(caFile string) (*http.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: time.Minute}, nil
}
