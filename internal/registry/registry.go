// Package registry asks container registries what a tag points to. The
// server resolves an image tag to a digest at apply, so that every instance
// of a revision runs the same image however the tag moves afterwards.
//
// Resolve tells a registry's definite answer (the tag does not exist, access
// is denied: the apply is refused) from no answer at all (ErrUnreachable:
// the server cannot reach the registry, though the agents may, and, unless
// the deployment's image policy forbids it, the digest the first agent
// pulls is pinned instead).
//
// An agent's report only ever contributes a digest: Pin checks it and puts
// it on the spec's own repository, so no node can name the image the rest
// of the fleet runs.
//
// Pinned references are written in the familiar form Docker prints in an
// image's RepoDigests and in docker pull's output: "nginx@sha256:…" for
// docker.io/library/nginx, "127.0.0.1:5000/hello@sha256:…" for the rest.
// The agent's runtimes report digests in the same form, so the server can
// compare what it resolved with what the agents pulled as plain strings.
package registry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
)

// Errors Resolve returns, wrapped with the reference and the registry's
// own words. Only ErrUnreachable means "no answer": every other error is
// the registry's answer, or the reference's fault.
var (
	// ErrUnreachable: the registry gave no answer about the reference:
	// it could not be dialled, TLS failed, it did not answer in time, or
	// it answered that it cannot answer now (HTTP 408, 429, 5xx).
	ErrUnreachable = errors.New("registry: unreachable")
	// ErrNotFound: the registry answered that the repository or the tag
	// does not exist.
	ErrNotFound = errors.New("registry: not found")
	// ErrDenied: the registry refused the credentials, or their absence
	// (HTTP 401 or 403). Docker Hub gives this answer, not ErrNotFound,
	// for a repository that does not exist.
	ErrDenied = errors.New("registry: access denied")
	// ErrInvalid: the reference is not a valid image reference.
	ErrInvalid = errors.New("registry: invalid reference")
)

// Timeout bounds one Resolve, retries included, whatever the deadline of
// its context: an apply waits on it.
const Timeout = 10 * time.Second

// Resolve returns ref pinned to the digest its tag points to now, as
// repository@sha256:… in Docker's familiar form (see the package doc). A
// ref without a tag means its "latest" tag. A ref that already carries a
// digest is returned, normalized, without contacting the registry; a tag
// beside the digest is dropped, as Docker ignores it.
//
// For a multi-platform image the digest is that of its index, which every
// platform's node can pull. Registries on loopback addresses (127.0.0.0/8,
// ::1, localhost) are reached over plain HTTP as Docker does, the rest only
// over HTTPS. Credentials come from Docker's config (~/.docker/config.json,
// $DOCKER_CONFIG, credential helpers); without them the request is
// anonymous.
func Resolve(ctx context.Context, ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("resolving image %q: %w: %w", ref, ErrInvalid, err)
	}
	repo := reference.TrimNamed(named)
	if d, ok := named.(reference.Digested); ok {
		return pin(repo, d.Digest())
	}
	tagged := reference.TagNameOnly(named)

	var opts []name.Option
	if isLoopback(reference.Domain(named)) {
		opts = append(opts, name.Insecure)
	}
	nref, err := name.ParseReference(tagged.String(), opts...)
	if err != nil {
		return "", fmt.Errorf("resolving image %q: %w: %w", ref, ErrInvalid, err)
	}

	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	// A transport of its own, closed after: resolves are rare (one per
	// apply), and no idle connection outlives the call.
	base, ok := remote.DefaultTransport.(*http.Transport)
	if !ok {
		base = &http.Transport{Proxy: http.ProxyFromEnvironment}
	}
	base = base.Clone()
	defer base.CloseIdleConnections()
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithTransport(tlsUnlessLoopback{base}),
		remote.WithUserAgent("dockfleet"),
		// Retries of 429 and 5xx answers and of network flakes, shorter
		// than go-containerregistry's (1s, 3s): someone waits on an apply.
		remote.WithRetryBackoff(remote.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 3}),
	}

	var dgst digest.Digest
	desc, err := remote.Head(nref, ropts...)
	if err == nil {
		dgst = digest.Digest(desc.Digest.String())
	} else if tryGet(ctx, err) {
		var full *remote.Descriptor
		if full, err = remote.Get(nref, ropts...); err == nil {
			dgst = digest.Digest(full.Digest.String())
		}
	}
	if err != nil {
		if perr := parent.Err(); errors.Is(perr, context.Canceled) {
			return "", fmt.Errorf("resolving image %s: %w", ref, perr)
		}
		return "", fmt.Errorf("resolving image %s: %w", ref, answer{classify(err), err})
	}
	return pin(repo, dgst)
}

// tryGet reports whether a failed HEAD is worth a GET. An answer to HEAD
// has no body: GET gets the registry's message, or the manifest from a
// registry that answers HEAD without a digest or a length. Not when the
// registry said to come back later (retries are done), nor when the time
// is up.
func tryGet(ctx context.Context, headErr error) bool {
	if ctx.Err() != nil {
		return false
	}
	var te *transport.Error
	return !errors.As(headErr, &te) || !errors.Is(classify(te), ErrUnreachable)
}

// Pin returns image's repository pinned to the digest a node reported it
// pulled, in the form Resolve returns. reported is a bare digest
// ("sha256:…") or a reference carrying one in image's own repository
// ("repo@sha256:…", as agents report it); anything else is ErrInvalid: a
// tag without a digest, another algorithm than sha256, or a digest of
// another repository. The result never takes more than the digest from
// reported.
func Pin(image, reported string) (string, error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", fmt.Errorf("pinning image %q: %w: %w", image, ErrInvalid, err)
	}
	repo := reference.TrimNamed(named)
	from, dgst, err := ParseDigest(reported)
	if err != nil {
		return "", err
	}
	if from != nil && from.Name() != repo.Name() {
		return "", fmt.Errorf("pinning image %s: %w: digest %s is of repository %s", reference.FamiliarString(named), ErrInvalid,
			dgst, reference.FamiliarName(from))
	}
	return pin(repo, dgst)
}

// maxReported bounds a reported digest: a repository name (at most 255
// characters) with "@sha256:" and 64 hex digits. A longer report is refused
// without being echoed in the error.
const maxReported = reference.NameTotalLengthMax + len("@sha256:") + 64

// ParseDigest parses a digest an agent reports an image was pulled with:
// a bare "sha256:…" (repo is nil) or "repo@sha256:…". Only sha256 digests
// with valid hex are accepted, the one algorithm registries and Docker
// use, so a node cannot pass off a weaker one.
func ParseDigest(s string) (repo reference.Named, dgst digest.Digest, err error) {
	if len(s) > maxReported {
		return nil, "", fmt.Errorf("parsing digest: %w: %d bytes long; a repository and a digest fit in %d", ErrInvalid, len(s), maxReported)
	}
	if !strings.Contains(s, "@") {
		dgst = digest.Digest(s)
	} else {
		named, err := reference.ParseNormalizedNamed(s)
		if err != nil {
			return nil, "", fmt.Errorf("parsing digest %q: %w: %w", s, ErrInvalid, err)
		}
		d, ok := named.(reference.Digested)
		if !ok {
			return nil, "", fmt.Errorf("parsing digest %q: %w: no digest", s, ErrInvalid)
		}
		repo, dgst = reference.TrimNamed(named), d.Digest()
	}
	// Validate first: Algorithm panics on a string without a colon.
	if err := dgst.Validate(); err != nil {
		return nil, "", fmt.Errorf("parsing digest %q: %w: %w", s, ErrInvalid, err)
	}
	if dgst.Algorithm() != digest.SHA256 {
		return nil, "", fmt.Errorf("parsing digest %q: %w: want sha256:<64 hex digits>", s, ErrInvalid)
	}
	return repo, dgst, nil
}

// pin returns repo@dgst in Docker's familiar form.
func pin(repo reference.Named, dgst digest.Digest) (string, error) {
	if err := dgst.Validate(); err != nil {
		return "", fmt.Errorf("pinning %s to %q: %w: %w", reference.FamiliarString(repo), dgst, ErrInvalid, err)
	}
	c, err := reference.WithDigest(repo, dgst)
	if err != nil {
		return "", fmt.Errorf("pinning %s to %s: %w: %w", reference.FamiliarString(repo), dgst, ErrInvalid, err)
	}
	return reference.FamiliarString(c), nil
}

// classify returns the error Resolve reports for err, one of the package's
// errors or nil for another definite answer of the registry.
func classify(err error) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		// Dial, TLS, timeouts, and failed pings (which hide their
		// causes): no answer about the reference.
		return ErrUnreachable
	}
	for _, d := range te.Errors {
		switch d.Code {
		case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode:
			return ErrNotFound
		case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
			return ErrDenied
		case transport.TooManyRequestsErrorCode, transport.UnavailableErrorCode:
			return ErrUnreachable
		}
	}
	switch s := te.StatusCode; {
	case s == http.StatusNotFound:
		return ErrNotFound
	case s == http.StatusUnauthorized, s == http.StatusForbidden:
		return ErrDenied
	case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests, s >= 500:
		return ErrUnreachable
	}
	return nil
}

// answer is an error the registry gave, under one of the package's errors.
// Its message is the registry's own ("manifest unknown"), without the
// request line and error codes go-containerregistry adds.
type answer struct {
	kind error // nil for an answer with no error of its own
	err  error
}

func (a answer) Error() string {
	msg := a.err.Error()
	var te *transport.Error
	if errors.As(a.err, &te) {
		var msgs []string
		for _, d := range te.Errors {
			msgs = append(msgs, cmp.Or(d.Message, string(d.Code)))
		}
		if len(msgs) > 0 {
			msg = strings.Join(msgs, "; ")
		} else {
			msg = fmt.Sprintf("HTTP %d %s", te.StatusCode, http.StatusText(te.StatusCode))
		}
	}
	if a.kind == nil {
		return msg
	}
	return a.kind.Error() + ": " + msg
}

func (a answer) Unwrap() []error {
	if a.kind == nil {
		return []error{a.err}
	}
	return []error{a.kind, a.err}
}

// isLoopback reports whether a registry's domain, with or without a port,
// is a loopback address or localhost: Docker talks plain HTTP to those
// without being told (127.0.0.0/8 is insecure by default, and ::1 and
// localhost resolve into loopback).
func isLoopback(domain string) bool {
	host := domain
	if h, _, err := net.SplitHostPort(domain); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// tlsUnlessLoopback refuses plain HTTP to anything but loopback.
// go-containerregistry falls back to HTTP for private (RFC 1918) addresses
// and *.localhost names; Docker does not, and neither may credentials or
// a token realm travel in clear over a network.
type tlsUnlessLoopback struct {
	base http.RoundTripper
}

func (t tlsUnlessLoopback) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" && !isLoopback(req.URL.Host) {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, fmt.Errorf("refusing plain HTTP to %s: only loopback registries are reached without TLS", req.URL.Host)
	}
	return t.base.RoundTrip(req)
}
