package pki

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A rotation's two steps: the states of the roots, which one signs and
// which serves, and what survives MarshalPEM and ParseRoots.
func TestRootsRotation(t *testing.T) {
	old := newTestCA(t)
	r := NewRoots(old)
	if r.Rotating() || r.Active() != old || r.Serving() != old || !r.Trusts(old.Fingerprint()) {
		t.Fatalf("a lone root: rotating %v, active %s, serving %s; want not rotating, %s active and serving",
			r.Rotating(), r.Active().Fingerprint(), r.Serving().Fingerprint(), old.Fingerprint())
	}
	if _, err := r.Finish(); !errors.Is(err, ErrNotRotating) {
		t.Errorf("Finish with no rotation: got %v; want ErrNotRotating", err)
	}

	rotating, err := r.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	nu := rotating.Active()
	if nu.Fingerprint() == old.Fingerprint() {
		t.Fatal("Rotate kept the root")
	}
	if !rotating.Rotating() || rotating.Serving().Fingerprint() != old.Fingerprint() ||
		!rotating.Trusts(old.Fingerprint()) || !rotating.Trusts(nu.Fingerprint()) {
		t.Errorf("rotating: serving %s, trusts old %v, new %v; want the old root serving and both trusted",
			rotating.Serving().Fingerprint(), rotating.Trusts(old.Fingerprint()), rotating.Trusts(nu.Fingerprint()))
	}
	if certs, _ := parseCertsPEM(rotating.BundlePEM()); len(certs) != 2 || fingerprint(certs[0].Raw) != nu.Fingerprint() {
		t.Errorf("the bundle holds %d roots; want 2, the new one first", len(certs))
	}
	if _, err := rotating.Rotate(); !errors.Is(err, ErrRotating) {
		t.Errorf("Rotate while rotating: got %v; want ErrRotating", err)
	}

	// Stored and read again, by this server and by one from before
	// rotations (ParseCA), which takes the active root.
	data, err := rotating.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseRoots("test", data)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := describe(back), describe(rotating); got != want {
		t.Errorf("read back: %s; want %s", got, want)
	}
	if ca, err := ParseCA("test", data); err != nil || ca.Fingerprint() != nu.Fingerprint() {
		t.Errorf("ParseCA of the roots: %v, %v; want the active root %s", ca, err, nu.Fingerprint())
	}
	if _, err := back.Serving().ServerCertificate(nil, time.Hour); err != nil {
		t.Errorf("the retiring root read back cannot issue: %v", err)
	}

	done, err := back.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if done.Rotating() || done.Serving().Fingerprint() != nu.Fingerprint() || done.Trusts(old.Fingerprint()) || !done.Knows(old.Fingerprint()) {
		t.Errorf("finished: %s; want the new root active and serving, the old one retired: known, not trusted", describe(done))
	}
	data, err = done.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(data), "PRIVATE KEY-----") != 2 { // BEGIN and END of one key
		t.Errorf("the finished roots keep %d key blocks; want the active root's only", strings.Count(string(data), "BEGIN PRIVATE KEY"))
	}
	back, err = ParseRoots("test", data)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := describe(back), describe(done); got != want {
		t.Errorf("read back: %s; want %s", got, want)
	}
}

// describe writes roots as "state:fingerprint[:serving]" for comparisons.
func describe(r *Roots) string {
	var parts []string
	for _, ri := range r.List() {
		p := string(ri.State) + ":" + ri.Fingerprint[:12]
		if ri.Serving {
			p += ":serving"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, " ")
}

// What a store from before rotations holds, CA.MarshalPEM's, reads as one
// active root; data with no active root or a root without its key is refused.
func TestParseRoots(t *testing.T) {
	ca := newTestCA(t)
	lone, err := ca.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRoots("test", lone)
	if err != nil || r.Rotating() || r.Active().Fingerprint() != ca.Fingerprint() {
		t.Fatalf("ParseRoots of CA.MarshalPEM: %v; want the CA as the lone root", err)
	}
	for name, data := range map[string][]byte{
		"empty":         nil,
		"no key":        ca.CertPEM(),
		"unknown state": []byte(strings.Replace(string(lone), "-----BEGIN CERTIFICATE-----\n", "-----BEGIN CERTIFICATE-----\nDockfleet-Root: spare\n\n", 1)),
	} {
		if _, err := ParseRoots("test", data); !errors.Is(err, ErrInvalidPEM) {
			t.Errorf("%s: got %v; want ErrInvalidPEM", name, err)
		}
	}
}

// The agent endpoint accepts client certificates of either root while a
// rotation runs, and of the active root only once it finished: the
// Authority changes what the next handshake trusts.
func TestAgentServerTrustsTheRootsOfTheHandshake(t *testing.T) {
	old := newTestCA(t)
	rotating, err := NewRoots(old).Rotate()
	if err != nil {
		t.Fatal(err)
	}
	auth := NewAuthority(NewRoots(old))
	server := AgentServerTLS(auth, NewServerCert(newTestServerCert(t, old)), nil)
	ofOld := newTestIdentity(t, old, "n1", time.Hour)
	ofNew := newTestIdentity(t, rotating.Active(), "n2", time.Hour)
	ofNew, err = SaveRoots(t.TempDir(), ofNew, rotating.BundlePEM())
	if err != nil {
		t.Fatal(err)
	}

	try := func(stage string, id *Identity, wantOK bool) {
		t.Helper()
		_, serverErr, clientErr := handshake(t, server, AgentClientTLS(id, "127.0.0.1"))
		if ok := serverErr == nil && clientErr == nil; ok != wantOK {
			t.Errorf("%s, certificate of node %s: server error %v, client error %v; want accepted %v", stage, id.NodeID, serverErr, clientErr, wantOK)
		}
	}
	try("before the rotation", ofOld, true)
	try("before the rotation", ofNew, false)
	auth.Set(rotating)
	try("rotating", ofOld, true)
	try("rotating", ofNew, true)
	done, err := rotating.Finish()
	if err != nil {
		t.Fatal(err)
	}
	auth.Set(done)
	// The server certificate is still the old root's here: the node of the
	// new root trusts both.
	try("finished", ofOld, false)
	try("finished", ofNew, true)
}

// SaveRoots stores the roots a server gives when one of them issued the
// node's certificate, and says whether that is the newest.
func TestSaveRoots(t *testing.T) {
	old := newTestCA(t)
	rotating, err := NewRoots(old).Rotate()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	key, err := NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := old.SignNode(csr, "n1", 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := SaveIdentity(dir, key, certPEM, old.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if !id.FromNewestRoot() || !id.SameRoots(old.CertPEM()) || id.SameRoots(rotating.BundlePEM()) {
		t.Fatal("an identity of its only root: want FromNewestRoot, the same roots as the old root's and not the bundle's")
	}
	both, err := SaveRoots(dir, id, rotating.BundlePEM())
	if err != nil {
		t.Fatal(err)
	}
	if both.FromNewestRoot() || len(both.CAs) != 2 {
		t.Errorf("with both roots: FromNewestRoot %v, %d roots; want false, 2", both.FromNewestRoot(), len(both.CAs))
	}
	loaded, err := LoadIdentity(dir)
	if err != nil || !loaded.SameRoots(rotating.BundlePEM()) {
		t.Errorf("loaded again: %v; want the bundle's roots", err)
	}
	done, err := rotating.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SaveRoots(dir, both, done.BundlePEM()); !errors.Is(err, ErrNotSignedByCA) {
		t.Errorf("roots none of which issued the certificate: got %v; want ErrNotSignedByCA", err)
	}
	if loaded, err := LoadIdentity(dir); err != nil || !loaded.SameRoots(rotating.BundlePEM()) {
		t.Errorf("after a refused SaveRoots: %v; want ca.crt unchanged", err)
	}
}
