// Package httpguard hardens the REST API's HTTP server in front of its
// handlers: package server wraps package restapi's Handler with
// (*Guard).Wrap, and restapi's authentication and login code call the
// Guard's limiters. What it does to every request, in this order:
//
//   - every answer carries security headers: no MIME sniffing, no framing,
//     a Content-Security-Policy, no referrer, HSTS (the API is HTTPS only),
//     no caching, and same-origin opener and resource policies, so that a
//     browser (the web console comes on this API) keeps the answers to the
//     page that asked for them;
//   - one source address (an IPv4 address, or an IPv6 /64 as one host
//     usually holds a whole one) may make Config.SourceBurst requests at
//     once and Config.SourceRate a second after; one more is answered 429
//     with Retry-After. Routes whose Policy says NoSourceLimit (GET
//     /v1/health, for load balancers and monitoring) are not counted;
//   - a request body over its route's Policy.MaxBody is refused with 413:
//     before it is read when its Content-Length says so, or, for a body of
//     unknown length, once the handler has read up to the limit, in place
//     of whatever the handler answers then.
//
// The limits of callers the handlers know, and the guard does not, are
// theirs to ask for: AllowToken once a request's API token is
// authenticated, and AllowLogin, LoginFailed and LoginSucceeded around a
// password login. Every limiter keeps its buckets in memory bounded by
// Config.MaxKeys, however many addresses or names a client cycles through.
//
// A source is the connection's peer: X-Forwarded-For and the like are not
// trusted, so a proxy in front of the server is one source for all its
// clients. Refusals are logged sparsely (package sparselog), with the
// source, the method, the path and the reason: never a header's value or
// the body.
//
// TLS is the listener's, pki.APIServerTLS: TLS 1.2 at least, with
// forward-secret AEAD suites only; this package's tests hold the real
// server to it.
package httpguard
