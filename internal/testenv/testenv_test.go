package testenv_test

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dockfleet/dockfleet/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder stands in for a test's testing.TB and records how it ended;
// Skipf and Fatalf end its goroutine as the real ones do.
type recorder struct {
	testing.TB
	outcome string
}

func (r *recorder) Helper()           {}
func (r *recorder) Cleanup(fn func()) { fn() }
func (r *recorder) Skipf(f string, args ...any) {
	r.outcome = "skip: " + fmt.Sprintf(f, args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(f string, args ...any) {
	r.outcome = "fatal: " + fmt.Sprintf(f, args...)
	runtime.Goexit()
}

func TestRequireDockerWithoutDaemon(t *testing.T) {
	tests := []struct {
		ci   string
		want string
	}{
		{"", "skip"},
		{"false", "skip"},
		{"true", "fatal"},
	}
	for _, tt := range tests {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/no.sock")
			t.Setenv("CI", tt.ci)
			r := &recorder{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				testenv.RequireDocker(r)
				r.outcome = "returned"
			}()
			<-done
			if got := regexp.MustCompile(`^\w+`).FindString(r.outcome); got != tt.want {
				t.Errorf("got %q; want %s", r.outcome, tt.want)
			}
		})
	}
}

func TestHelloImages(t *testing.T) {
	c := testenv.RequireDocker(t)
	testenv.HelloImages(t)
	for _, ref := range []string{"hello:v1", "hello:v2", "hello:broken"} {
		if ok, err := c.HasImage(t.Context(), ref); err != nil || !ok {
			t.Errorf("HasImage(%s): got %t, %v; want true, nil", ref, ok, err)
		}
	}
}

func TestRegistry(t *testing.T) {
	addr := testenv.Registry(t)
	resp, err := http.Get("http://" + addr + "/v2/_catalog")
	if err != nil {
		t.Fatalf("GET catalog: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET catalog: got %s; want 200 OK", resp.Status)
	}
}

func TestID(t *testing.T) {
	a, b := testenv.ID(), testenv.ID()
	if a == b || !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(a) {
		t.Errorf("ID: got %q and %q; want two different 12-digit hex strings", a, b)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	testenv.Eventually(t, time.Minute, "the third call", func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
	r := &recorder{}
	done := make(chan struct{})
	go func() { // recorder.Fatalf ends its goroutine, as t.Fatalf does
		defer close(done)
		testenv.Eventually(r, 50*time.Millisecond, "never", func() error { return errors.New("still not") })
	}()
	<-done
	if !strings.Contains(r.outcome, "fatal: timed out after 50ms waiting for never: still not") {
		t.Errorf("outcome %q does not say what and why", r.outcome)
	}
}
