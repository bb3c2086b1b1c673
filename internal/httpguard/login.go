package httpguard

import (
	"hash/maphash"
	"strings"
	"time"
)

// The password login limiter. Each attempt spends one token of its source
// address's bucket (LoginSourceBurst, then one every LoginSourceEvery) and
// one of its user name's (LoginUserBurst, then one every LoginUserEvery)
// before the password is checked, so that attempts made at once cannot
// outrun their count; a success gives them back. A user name is counted
// whether or not a user has it, so the answers are the same for both and
// tell nobody which names exist. A user name that is guessed at is locked
// for its owner too, at most LoginUserEvery at a time while the guessing
// lasts: API tokens, which automation uses, are not held up.

// AllowLogin counts a password login attempt for user from source (the
// request's RemoteAddr; an IPv6 address counts by its /64) and reports
// whether it may go on. When it may not, answer 429 with TooManyRequests
// and retryAfter, the same way whether or not the user exists, without
// checking the password. When it may, check the password, then call
// LoginFailed or LoginSucceeded, for a user that does not exist too.
func (g *Guard) AllowLogin(source, user string) (ok bool, retryAfter time.Duration) {
	src, key := sourceAddr(source), g.userKey(user)
	if ok, wait := g.loginSources.take(src); !ok {
		g.loginLog.Warn("refusing a login: its source address failed too many logins",
			"source", sourceString(src), "user", clip(user), "failures", LoginSourceBurst, "every", LoginSourceEvery)
		return false, wait
	}
	if ok, wait := g.loginUsers.take(key); !ok {
		g.loginSources.give(src)
		g.loginLog.Warn("refusing a login: its user name failed too many logins",
			"source", sourceString(src), "user", clip(user), "failures", LoginUserBurst, "every", LoginUserEvery)
		return false, wait
	}
	return true, 0
}

// LoginFailed ends an attempt AllowLogin let go on with a wrong password
// or an unknown user: it stays counted against its source and user name.
func (g *Guard) LoginFailed(source, user string) {
	g.failLog.Warn("a login failed", "source", sourceString(sourceAddr(source)), "user", clip(user))
}

// LoginSucceeded ends an attempt AllowLogin let go on with the right
// password: the source gets its attempt back and the user name its whole
// budget, so that a few typing mistakes before it cost nothing later.
func (g *Guard) LoginSucceeded(source, user string) {
	g.loginSources.give(sourceAddr(source))
	g.loginUsers.reset(g.userKey(user))
}

// userKey is the bucket key of a user name: its hash, so that a long name
// costs no more memory than a short one, and of its lower case, so that
// "Admin" and "admin" share one budget whichever one the store knows.
func (g *Guard) userKey(user string) uint64 {
	return maphash.String(g.seed, strings.ToLower(user))
}
