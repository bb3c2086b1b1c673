package httpguard

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fail makes n failed logins for user from source, each allowed.
func fail(t *testing.T, g *Guard, source, user string, n int) {
	t.Helper()
	for i := range n {
		if ok, wait := g.AllowLogin(source, user); !ok {
			t.Fatalf("login %d of %d for %q from %s refused (retry after %v); want it allowed", i+1, n, user, source, wait)
		}
		g.LoginFailed(source, user)
	}
}

func checkRefused(t *testing.T, g *Guard, source, user string, wantWait time.Duration) {
	t.Helper()
	if ok, wait := g.AllowLogin(source, user); ok || wait != wantWait {
		t.Fatalf("AllowLogin(%s, %q) = %v, %v; want false, %v", source, user, ok, wait, wantWait)
	}
}

// A user name may fail LoginUserBurst times, then once every
// LoginUserEvery, from any address; a name nobody has is answered the
// same, attempt for attempt, as one a user has.
func TestLoginUserLimit(t *testing.T) {
	g, clock, logs := testGuard(t, Config{})
	for _, user := range []string{"alice", "no-such-user"} {
		fail(t, g, "192.0.2.1:1000", user, LoginUserBurst)
		checkRefused(t, g, "198.51.100.1:1000", user, LoginUserEvery) // from anywhere
	}
	clock.Advance(LoginUserEvery - time.Second)
	checkRefused(t, g, "192.0.2.1:1000", "alice", time.Second)
	clock.Advance(time.Second)
	for _, user := range []string{"alice", "no-such-user"} {
		fail(t, g, "192.0.2.1:1000", user, 1)
		checkRefused(t, g, "192.0.2.1:1000", user, LoginUserEvery)
	}
	checkRefused(t, g, "192.0.2.1:1000", "ALICE", LoginUserEvery) // one budget, whatever the case
	if ok, _ := g.AllowLogin("192.0.2.1:1000", "bob"); !ok {
		t.Error("another user name was refused")
	}
	if !strings.Contains(logs.String(), "refusing a login: its user name failed too many logins") {
		t.Errorf("no refusal logged:\n%s", logs)
	}
}

// A source address may fail LoginSourceBurst times, then once every
// LoginSourceEvery, whatever user names it tries; other addresses log in.
func TestLoginSourceLimit(t *testing.T) {
	g, clock, _ := testGuard(t, Config{})
	for i := range LoginSourceBurst {
		fail(t, g, "[2001:db8::1]:1000", fmt.Sprint("user", i), 1)
	}
	checkRefused(t, g, "[2001:db8::ff]:2000", "another", LoginSourceEvery) // the same /64
	if ok, _ := g.AllowLogin("[2001:db8:0:1::1]:1000", "another"); !ok {
		t.Error("another source address was refused")
	}
	// A refusal by its source spends nothing of the user name's budget.
	fail(t, g, "192.0.2.9:1000", "another", LoginUserBurst-1)
	clock.Advance(LoginSourceEvery)
	fail(t, g, "[2001:db8::1]:1000", "user0", 1)
	checkRefused(t, g, "[2001:db8::1]:1000", "user0", LoginSourceEvery)
}

// A success gives the source its attempt back and the user name its whole
// budget.
func TestLoginSucceededResets(t *testing.T) {
	g, _, _ := testGuard(t, Config{})
	for range 3 { // more than either budget in all
		fail(t, g, "192.0.2.1:1", "alice", LoginUserBurst-1)
		if ok, _ := g.AllowLogin("192.0.2.1:1", "alice"); !ok {
			t.Fatal("the right password's attempt was refused")
		}
		g.LoginSucceeded("192.0.2.1:1", "alice")
	}
	// 3 × 4 failures spent of the source's 20: 8 are left.
	for i := range LoginSourceBurst - 3*(LoginUserBurst-1) {
		fail(t, g, "192.0.2.1:1", fmt.Sprint("other", i), 1)
	}
	checkRefused(t, g, "192.0.2.1:1", "alice", LoginSourceEvery)
}

// A user name's refusal gives the source its attempt back: a user locked
// out by someone else's guessing does not use up the budget of the
// address they share with others.
func TestLoginUserRefusalSparesSource(t *testing.T) {
	g, _, _ := testGuard(t, Config{})
	fail(t, g, "203.0.113.1:1", "victim", LoginUserBurst)
	for range 3 * LoginSourceBurst {
		checkRefused(t, g, "192.0.2.1:1", "victim", LoginUserEvery)
	}
	fail(t, g, "192.0.2.1:1", "colleague", LoginUserBurst)
}

// Attempts made at once cannot outrun their count: each is counted when
// it is allowed, before its password is checked.
func TestLoginConcurrentAttempts(t *testing.T) {
	g, _, _ := testGuard(t, Config{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for i := range 100 {
		wg.Go(func() {
			src := fmt.Sprintf("10.0.%d.%d:1", i/250, i%250) // each its own source
			if ok, _ := g.AllowLogin(src, "alice"); ok {
				mu.Lock()
				allowed++
				mu.Unlock()
				g.LoginFailed(src, "alice")
			}
		})
	}
	wg.Wait()
	if allowed != LoginUserBurst {
		t.Errorf("%d of 100 attempts at once allowed; want %d", allowed, LoginUserBurst)
	}
}

// User names and sources that cycle keep the login limiter at its cap.
func TestLoginMapsBounded(t *testing.T) {
	const max = 1000
	g, _, _ := testGuard(t, Config{MaxKeys: max})
	for i := range 100_000 {
		src := fmt.Sprintf("[2001:db8:%x:%x::1]:1", i>>16, i&0xffff)
		user := fmt.Sprint("user-", i, strings.Repeat("x", i%100))
		if ok, _ := g.AllowLogin(src, user); !ok {
			t.Fatalf("attempt %d refused", i)
		}
		g.LoginFailed(src, user)
	}
	if ns, nu := g.loginSources.len(), g.loginUsers.len(); ns > max || nu > max {
		t.Errorf("%d source and %d user name buckets kept; want %d at most each", ns, nu, max)
	}
}
