package httpguard

import (
	"encoding/json"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dockfleet/dockfleet/internal/agentsvc"
	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/sparselog"
)

// Defaults of Config and Policy.
const (
	// DefaultMaxBody bounds a request body where no route says otherwise:
	// the API's JSON requests are a few hundred bytes, a node's whole set of
	// labels a few KiB.
	DefaultMaxBody = 64 << 10
	// DefaultSourceRate and DefaultSourceBurst are far above what people
	// and scripts send from one address: the CLI makes one to a few
	// requests a command (listing 19,000 nodes is one request), a script
	// polling a rollout a few a second. They stop a flood of cheap
	// requests, not a busy client.
	DefaultSourceRate  = 50
	DefaultSourceBurst = 200
	// DefaultTokenRate and DefaultTokenBurst limit one API token over
	// every address it is used from: a CI system's token shared by many
	// runners stays well under them.
	DefaultTokenRate  = 100
	DefaultTokenBurst = 1000
	// DefaultMaxKeys is how many buckets each limiter keeps at most: far
	// more addresses or names than are busy at once, in about 6 MiB (175
	// bytes a bucket).
	DefaultMaxKeys = 1 << 15
)

// The password login limits, after OWASP's advice: a user name may fail
// LoginUserBurst times, then once every LoginUserEvery (5 in 15 minutes);
// a source address LoginSourceBurst times, then once every
// LoginSourceEvery (20 a minute), which is what one office behind a NAT
// mistypes, and not a dictionary.
const (
	LoginUserBurst   = 5
	LoginUserEvery   = 3 * time.Minute
	LoginSourceBurst = 20
	LoginSourceEvery = 3 * time.Second
)

// APIContentSecurityPolicy is the Content-Security-Policy of the API's
// JSON answers: nothing in them may load or run anything, nor be framed.
// The web console's pages will set their own, as a route Policy.
const APIContentSecurityPolicy = "default-src 'none'; frame-ancestors 'none'"

// logInterval is how often each kind of refusal is logged at most.
const logInterval = agentsvc.LimitLogInterval

// Policy is what the guard applies to a class of routes. A zero field but
// NoSourceLimit takes the value of Config.Default, whose zero fields take
// the package's defaults.
type Policy struct {
	// MaxBody bounds a request body, in bytes; default DefaultMaxBody.
	MaxBody int64
	// ContentSecurityPolicy is the header of the answers; default
	// APIContentSecurityPolicy.
	ContentSecurityPolicy string
	// CacheControl is the header of the answers; default "no-store".
	CacheControl string
	// NoSourceLimit leaves the requests uncounted by their source's rate.
	NoSourceLimit bool
}

// Config configures a Guard. A zero field takes its default.
type Config struct {
	// Default is the policy of the requests no pattern of Routes matches.
	Default Policy
	// Routes gives classes of routes a policy of their own, by
	// http.ServeMux pattern: "POST /v1/apply", "GET /v1/health", "/ui/".
	Routes map[string]Policy
	// SourceRate and SourceBurst limit the requests of one source address:
	// SourceBurst at once and SourceRate a second after. Defaults
	// DefaultSourceRate and DefaultSourceBurst.
	SourceRate  float64
	SourceBurst int
	// TokenRate and TokenBurst limit the requests of one API token, as
	// AllowToken does. Defaults DefaultTokenRate and DefaultTokenBurst.
	TokenRate  float64
	TokenBurst int
	// MaxKeys bounds the buckets each limiter keeps; default DefaultMaxKeys.
	MaxKeys int
	// Logger says, sparsely, what the guard refuses; nil logs nothing.
	Logger *slog.Logger
	// Clock is the time of the limiters; nil is the real clock.
	Clock clockwork.Clock
}

// Guard is the REST API's guard; see the package documentation. It is
// safe for concurrent use.
type Guard struct {
	cfg    Config
	def    *route
	routes *http.ServeMux // of *route, to find a request's

	sources      *buckets[netip.Addr]
	tokens       *buckets[string]
	loginSources *buckets[netip.Addr]
	loginUsers   *buckets[uint64] // by userKey
	seed         maphash.Seed

	sourceLog, bodyLog, tokenLog, loginLog, failLog *sparselog.Log
}

// New makes the guard of cfg. It refuses a negative limit and a pattern
// http.ServeMux refuses.
func New(cfg Config) (*Guard, error) {
	cfg = cfg.withDefaults()
	if cfg.SourceRate <= 0 || cfg.SourceBurst < 1 || cfg.TokenRate <= 0 || cfg.TokenBurst < 1 || cfg.MaxKeys < 1 {
		return nil, fmt.Errorf("httpguard: source rate %g and burst %d, token rate %g and burst %d, max keys %d: each must be positive",
			cfg.SourceRate, cfg.SourceBurst, cfg.TokenRate, cfg.TokenBurst, cfg.MaxKeys)
	}
	def, err := newRoute(cfg.Default, Policy{MaxBody: DefaultMaxBody, ContentSecurityPolicy: APIContentSecurityPolicy, CacheControl: "no-store"})
	if err != nil {
		return nil, fmt.Errorf("httpguard: default policy: %w", err)
	}
	g := &Guard{
		cfg:          cfg,
		def:          def,
		routes:       http.NewServeMux(),
		sources:      newBuckets[netip.Addr](interval(cfg.SourceRate), cfg.SourceBurst, cfg.MaxKeys, cfg.Clock),
		tokens:       newBuckets[string](interval(cfg.TokenRate), cfg.TokenBurst, cfg.MaxKeys, cfg.Clock),
		loginSources: newBuckets[netip.Addr](LoginSourceEvery, LoginSourceBurst, cfg.MaxKeys, cfg.Clock),
		loginUsers:   newBuckets[uint64](LoginUserEvery, LoginUserBurst, cfg.MaxKeys, cfg.Clock),
		seed:         maphash.MakeSeed(),
		sourceLog:    sparselog.New(cfg.Logger, logInterval),
		bodyLog:      sparselog.New(cfg.Logger, logInterval),
		tokenLog:     sparselog.New(cfg.Logger, logInterval),
		loginLog:     sparselog.New(cfg.Logger, logInterval),
		failLog:      sparselog.New(cfg.Logger, logInterval),
	}
	for pattern, p := range cfg.Routes {
		rt, err := newRoute(p, def.Policy)
		if err == nil {
			err = handle(g.routes, pattern, rt)
		}
		if err != nil {
			return nil, fmt.Errorf("httpguard: route %q: %w", pattern, err)
		}
	}
	return g, nil
}

func (c Config) withDefaults() Config {
	if c.SourceRate == 0 {
		c.SourceRate = DefaultSourceRate
	}
	if c.SourceBurst == 0 {
		c.SourceBurst = DefaultSourceBurst
	}
	if c.TokenRate == 0 {
		c.TokenRate = DefaultTokenRate
	}
	if c.TokenBurst == 0 {
		c.TokenBurst = DefaultTokenBurst
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	return c
}

// handle registers rt under pattern, or says why http.ServeMux would not.
func handle(mux *http.ServeMux, pattern string, rt *route) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	mux.Handle(pattern, rt)
	return nil
}

// route is a Policy with its zero fields filled, and the headers it sets.
type route struct {
	Policy
	headers [][2]string
}

func newRoute(p, def Policy) (*route, error) {
	if p.MaxBody < 0 {
		return nil, fmt.Errorf("max body %d: must be positive", p.MaxBody)
	}
	if p.MaxBody == 0 {
		p.MaxBody = def.MaxBody
	}
	if p.ContentSecurityPolicy == "" {
		p.ContentSecurityPolicy = def.ContentSecurityPolicy
	}
	if p.CacheControl == "" {
		p.CacheControl = def.CacheControl
	}
	return &route{Policy: p, headers: [][2]string{
		{"X-Content-Type-Options", "nosniff"},
		{"X-Frame-Options", "DENY"},
		{"Content-Security-Policy", p.ContentSecurityPolicy},
		{"Referrer-Policy", "no-referrer"},
		{"Strict-Transport-Security", "max-age=31536000"},
		{"Cache-Control", p.CacheControl},
		{"Cross-Origin-Opener-Policy", "same-origin"},
		{"Cross-Origin-Resource-Policy", "same-origin"},
	}}, nil
}

// ServeHTTP is never called: the guard's mux only finds a request's route.
func (*route) ServeHTTP(http.ResponseWriter, *http.Request) {}

// route is the route of r: its pattern's in Config.Routes, or the default.
func (g *Guard) route(r *http.Request) *route {
	if h, _ := g.routes.Handler(r); h != nil {
		if rt, ok := h.(*route); ok {
			return rt
		}
	}
	return g.def
}

// Wrap returns next behind the guard.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt := g.route(r)
		h := w.Header()
		for _, kv := range rt.headers {
			h.Set(kv[0], kv[1])
		}
		src := sourceAddr(r.RemoteAddr)
		if !rt.NoSourceLimit {
			if ok, wait := g.sources.take(src); !ok {
				g.sourceLog.Warn("refusing an API request: its source address is over its request rate",
					"source", sourceString(src), "method", r.Method, "path", clip(r.URL.Path), "rate", g.cfg.SourceRate, "burst", g.cfg.SourceBurst)
				TooManyRequests(w, wait, fmt.Sprintf("too many requests from %s: the server takes %d at once and %g a second after from one address; retry in %ss",
					sourceString(src), g.cfg.SourceBurst, g.cfg.SourceRate, RetryAfter(wait)))
				return
			}
		}
		if r.ContentLength > rt.MaxBody {
			g.tooLarge(w, r, src, rt.MaxBody)
			return
		}
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		body := &capBody{ReadCloser: http.MaxBytesReader(w, r.Body, rt.MaxBody)}
		r.Body = body
		cw := &capWriter{ResponseWriter: w, body: body, refuse: func() { g.tooLarge(w, r, src, rt.MaxBody) }}
		next.ServeHTTP(cw, r)
		cw.finish()
	})
}

// tooLarge answers 413 to a request whose body is over max.
func (g *Guard) tooLarge(w http.ResponseWriter, r *http.Request, src netip.Addr, max int64) {
	g.bodyLog.Warn("refusing an API request: its body is over its endpoint's limit",
		"source", sourceString(src), "method", r.Method, "path", clip(r.URL.Path), "max_body", max, "content_length", r.ContentLength)
	writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is larger than %d bytes, the most this endpoint takes", max))
}

// AllowToken takes one request from the budget of the API token whose ID
// is id, over every address it is used from: TokenBurst at once and
// TokenRate a second after. Call it once the request's token is
// authenticated, so that only the token's holder spends its budget, not
// whoever sends its ID with a wrong secret (those count against their
// source address). Without budget it reports false and how long until
// there is some: answer 429, with TooManyRequests.
func (g *Guard) AllowToken(id string) (ok bool, retryAfter time.Duration) {
	ok, retryAfter = g.tokens.take(id)
	if !ok {
		g.tokenLog.Warn("refusing an API request: its token is over its request rate",
			"token_id", clip(id), "rate", g.cfg.TokenRate, "burst", g.cfg.TokenBurst)
	}
	return ok, retryAfter
}

// TooManyRequests answers 429 with a Retry-After header of retryAfter
// (RetryAfter) and msg as the API's JSON error.
func TooManyRequests(w http.ResponseWriter, retryAfter time.Duration, msg string) {
	w.Header().Set("Retry-After", RetryAfter(retryAfter))
	writeError(w, http.StatusTooManyRequests, msg)
}

// RetryAfter is the value of a Retry-After header for a wait of d: whole
// seconds, rounded up, one at least.
func RetryAfter(d time.Duration) string {
	return strconv.FormatInt(max(1, int64((d+time.Second-1)/time.Second)), 10)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(api.Error{Error: msg})
}

// sourceAddr is the address a request from remoteAddr (host:port, as
// http.Request.RemoteAddr has it, or an address alone) counts against,
// grouped as agentsvc.Source groups the agent endpoint's. What does not
// parse counts as the zero address: all of it together.
func sourceAddr(remoteAddr string) netip.Addr {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		a, err := netip.ParseAddr(remoteAddr)
		if err != nil {
			return netip.Addr{}
		}
		ap = netip.AddrPortFrom(a, 0)
	}
	return agentsvc.Source(net.TCPAddrFromAddrPort(ap))
}

// sourceString is src as a message says it: an IPv6 source as its /64.
func sourceString(src netip.Addr) string {
	if src.Is6() {
		return netip.PrefixFrom(src, 64).String()
	}
	return src.String()
}

// clip bounds what a client sends before it is logged.
func clip(s string) string {
	const most = 256
	if len(s) > most {
		return s[:most] + "…"
	}
	return s
}
