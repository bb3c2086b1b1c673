package httpguard_test

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/dockfleet/dockfleet/internal/httpguard"
)

// A password login handler asks the guard before it checks the password,
// and tells it how the check went, for a user that does not exist too.
func ExampleGuard_AllowLogin() {
	guard, err := httpguard.New(httpguard.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	passwords := map[string]string{"alice": "correct horse"} // a real store keeps argon2 hashes
	login := func(w http.ResponseWriter, r *http.Request) {
		user, password := r.FormValue("user"), r.FormValue("password")
		if ok, wait := guard.AllowLogin(r.RemoteAddr, user); !ok {
			httpguard.TooManyRequests(w, wait, "too many failed logins; retry in "+httpguard.RetryAfter(wait)+"s")
			return
		}
		want, known := passwords[user]
		if !known || subtle.ConstantTimeCompare([]byte(password), []byte(want)) != 1 {
			guard.LoginFailed(r.RemoteAddr, user)
			http.Error(w, "wrong user name or password", http.StatusUnauthorized)
			return
		}
		guard.LoginSucceeded(r.RemoteAddr, user)
		fmt.Fprintln(w, "welcome")
	}
	try := func(user, password string) {
		r := httptest.NewRequest("POST", "/v1/login", strings.NewReader("user="+user+"&password="+password))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		login(w, r)
		if wait := w.Header().Get("Retry-After"); wait != "" {
			fmt.Println(user, w.Code, "Retry-After:", wait)
			return
		}
		fmt.Println(user, w.Code)
	}
	for range httpguard.LoginUserBurst {
		try("alice", "guess")
	}
	try("alice", "correct horse") // locked: the password is not even checked
	try("mallory", "guess")       // a name nobody has is answered as one a user has
	// Output:
	// alice 401
	// alice 401
	// alice 401
	// alice 401
	// alice 401
	// alice 429 Retry-After: 180
	// mallory 401
}
