package oidctest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// accessTokenLifetime is how long the (opaque) access tokens are valid.
const accessTokenLifetime = 5 * time.Minute

// storage is the provider's op.Storage and op.DeviceAuthorizationStorage,
// in memory: users, the one client, the logins under way, access tokens
// and the signing key. It hands op copies, never what it changes later.
type storage struct {
	client      client
	autoApprove string

	mu sync.Mutex
	// keys are all published; the last one signs.
	keys      []signingKey
	users     map[string]User // by username
	subjects  map[string]string
	requests  map[string]*authRequest // by ID
	codes     map[string]string       // authorization code → request ID
	devices   map[string]*op.DeviceAuthorizationState
	userCodes map[string]string // user code → device code
	tokens    map[string]accessToken
}

var (
	_ op.Storage                    = (*storage)(nil)
	_ op.DeviceAuthorizationStorage = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest  = (*storage)(nil)
	_ op.AuthRequest                = (*authRequest)(nil)
	_ op.Client                     = client{}
)

type accessToken struct {
	subject string
	scopes  []string
	expiry  time.Time
}

func newStorage(o options) (*storage, error) {
	s := &storage{
		client:      client{id: o.clientID, secret: o.secret},
		autoApprove: o.autoApprove,
		users:       make(map[string]User),
		subjects:    make(map[string]string),
		requests:    make(map[string]*authRequest),
		codes:       make(map[string]string),
		devices:     make(map[string]*op.DeviceAuthorizationState),
		userCodes:   make(map[string]string),
		tokens:      make(map[string]accessToken),
	}
	for _, u := range o.users {
		if u.Subject == "" {
			u.Subject = "sub-" + u.Username
		}
		u.Groups = slices.Clone(u.Groups)
		s.users[u.Username] = u
		s.subjects[u.Subject] = u.Username
	}
	return s, s.rotate()
}

// rotate adds a new signing key: tokens are signed with it from now on,
// and the keys before it stay published.
func (s *storage) rotate() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, signingKey{key: key, id: rand.Text()[:8]})
	return nil
}

// sign signs claims as the provider signs its ID tokens.
func (s *storage) sign(claims map[string]any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	key, _ := s.SigningKey(context.Background())
	signer, err := op.SignerFromKey(key)
	if err != nil {
		return "", err
	}
	sig, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("oidctest: signing: %w", err)
	}
	return sig.CompactSerialize()
}

func (s *storage) user(username string) (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[username]
	return u, ok
}

func (s *storage) userBySubject(subject string) (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[s.subjects[subject]]
	return u, ok
}

// fill sets the claims of u that scopes ask for.
func (u User) fill(info *oidc.UserInfo, scopes []string) {
	info.Subject = u.Subject
	for _, scope := range scopes {
		switch scope {
		case oidc.ScopeProfile:
			info.PreferredUsername = u.Username
			info.Name = u.Username
		case oidc.ScopeEmail:
			if u.Email != "" {
				info.Email = u.Email
				info.EmailVerified = oidc.Bool(!u.EmailUnverified)
			}
		case GroupsScope:
			if u.Groups != nil {
				info.AppendClaims("groups", slices.Clone(u.Groups))
			}
		}
	}
}

// completeDevice approves (as username) or denies the device login of
// userCode.
func (s *storage) completeDevice(userCode, username string, deny bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	state, ok := s.devices[s.userCodes[userCode]]
	if !ok {
		return fmt.Errorf("oidctest: no device login with the code %q", userCode)
	}
	if deny {
		state.Denied = true
		return nil
	}
	u, ok := s.users[username]
	if !ok {
		return fmt.Errorf("oidctest: no user %q", username)
	}
	state.Done, state.Subject, state.AuthTime, state.AMR = true, u.Subject, time.Now(), []string{"pwd"}
	return nil
}

// completeLogin logs the browser login of the auth request id in as
// username.
func (s *storage) completeLogin(id, username string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.requests[id]
	if !ok {
		return fmt.Errorf("oidctest: no login %q under way", id)
	}
	u, ok := s.users[username]
	if !ok {
		return fmt.Errorf("oidctest: no user %q", username)
	}
	req.done, req.subject, req.authTime = true, u.Subject, time.Now()
	return nil
}

// op.DeviceAuthorizationStorage

func (s *storage) StoreDeviceAuthorization(_ context.Context, clientID, deviceCode, userCode string, expires time.Time, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if clientID != s.client.id {
		return fmt.Errorf("oidctest: no client %q", clientID)
	}
	if _, ok := s.userCodes[userCode]; ok {
		return op.ErrDuplicateUserCode
	}
	state := &op.DeviceAuthorizationState{ClientID: clientID, Scopes: slices.Clone(scopes), Expires: expires}
	if u, ok := s.users[s.autoApprove]; ok {
		state.Done, state.Subject, state.AuthTime, state.AMR = true, u.Subject, time.Now(), []string{"pwd"}
	}
	s.devices[deviceCode] = state
	s.userCodes[userCode] = deviceCode
	return nil
}

func (s *storage) GetDeviceAuthorizatonState(ctx context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	state, ok := s.devices[deviceCode]
	if !ok || state.ClientID != clientID {
		return nil, errors.New("oidctest: no such device code for this client")
	}
	if state.Done || state.Denied {
		// A device code is good for one token.
		delete(s.devices, deviceCode)
		for code, dc := range s.userCodes {
			if dc == deviceCode {
				delete(s.userCodes, code)
			}
		}
	}
	c := *state
	c.Scopes, c.AMR, c.Audience = slices.Clone(state.Scopes), slices.Clone(state.AMR), slices.Clone(state.Audience)
	return &c, nil
}

// op.AuthStorage

func (s *storage) CreateAuthRequest(_ context.Context, req *oidc.AuthRequest, userID string) (op.AuthRequest, error) {
	if slices.Equal(req.Prompt, []string{oidc.PromptNone}) {
		return nil, oidc.ErrLoginRequired()
	}
	r := &authRequest{
		id:           rand.Text(),
		clientID:     req.ClientID,
		redirectURI:  req.RedirectURI,
		state:        req.State,
		nonce:        req.Nonce,
		scopes:       slices.Clone(req.Scopes),
		responseType: req.ResponseType,
		responseMode: req.ResponseMode,
		subject:      userID,
	}
	if req.CodeChallenge != "" {
		r.challenge = &oidc.CodeChallenge{Challenge: req.CodeChallenge, Method: req.CodeChallengeMethod}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[r.id] = r
	return r.copy(), nil
}

func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.requests[id]
	if !ok {
		return nil, fmt.Errorf("oidctest: no login %q under way", id)
	}
	return r.copy(), nil
}

func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	id, ok := s.codes[code]
	s.mu.Unlock()
	if !ok {
		return nil, errors.New("oidctest: unknown or used authorization code")
	}
	return s.AuthRequestByID(ctx, id)
}

func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	for code, rid := range s.codes {
		if rid == id {
			delete(s.codes, code)
		}
	}
	return nil
}

func (s *storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	id, expiry := rand.Text(), time.Now().Add(accessTokenLifetime)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[id] = accessToken{subject: req.GetSubject(), scopes: slices.Clone(req.GetScopes()), expiry: expiry}
	return id, expiry, nil
}

var errNoRefresh = errors.New("oidctest: refresh tokens are not supported")

func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errNoRefresh
}

func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, errNoRefresh
}

func (s *storage) TerminateSession(context.Context, string, string) error { return nil }

func (s *storage) RevokeToken(_ context.Context, tokenOrTokenID, _, _ string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, tokenOrTokenID)
	return nil
}

func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[len(s.keys)-1], nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]op.Key, len(s.keys))
	for i, k := range s.keys {
		keys[i] = publicKey{&k.key.PublicKey, k.id}
	}
	return keys, nil
}

// op.OPStorage

func (s *storage) GetClientByClientID(_ context.Context, clientID string) (op.Client, error) {
	if clientID != s.client.id {
		return nil, fmt.Errorf("oidctest: no client %q", clientID)
	}
	return s.client, nil
}

func (s *storage) AuthorizeClientIDSecret(_ context.Context, clientID, secret string) error {
	if clientID != s.client.id || s.client.secret == "" || secret != s.client.secret {
		return errors.New("oidctest: wrong client ID or secret")
	}
	return nil
}

// SetUserinfoFromScopes is deprecated in op: SetUserinfoFromRequest does
// its work.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest sets the claims of an ID token
// (op.CanSetUserinfoFromRequest).
func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	u, ok := s.userBySubject(req.GetSubject())
	if !ok {
		return fmt.Errorf("oidctest: no user with subject %q", req.GetSubject())
	}
	u.fill(info, scopes)
	return nil
}

// SetUserinfoFromToken answers the userinfo endpoint.
func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, _, _ string) error {
	s.mu.Lock()
	tok, ok := s.tokens[tokenID]
	s.mu.Unlock()
	if !ok || time.Now().After(tok.expiry) {
		return errors.New("oidctest: unknown or expired access token")
	}
	u, ok := s.userBySubject(tok.subject)
	if !ok {
		return fmt.Errorf("oidctest: no user with subject %q", tok.subject)
	}
	u.fill(info, tok.scopes)
	return nil
}

func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errors.New("oidctest: introspection is not supported")
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("oidctest: JWT profile is not supported")
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("oidctest: JWT profile is not supported")
}

func (s *storage) Health(context.Context) error { return nil }

// authRequest is a browser login under way (op.AuthRequest).
type authRequest struct {
	id, clientID, redirectURI, state, nonce string
	scopes                                  []string
	responseType                            oidc.ResponseType
	responseMode                            oidc.ResponseMode
	challenge                               *oidc.CodeChallenge

	done     bool
	subject  string
	authTime time.Time
}

func (r *authRequest) copy() *authRequest {
	c := *r
	c.scopes = slices.Clone(r.scopes)
	return &c
}

func (r *authRequest) GetID() string                         { return r.id }
func (r *authRequest) GetACR() string                        { return "" }
func (r *authRequest) GetAMR() []string                      { return []string{"pwd"} }
func (r *authRequest) GetAudience() []string                 { return []string{r.clientID} }
func (r *authRequest) GetAuthTime() time.Time                { return r.authTime }
func (r *authRequest) GetClientID() string                   { return r.clientID }
func (r *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return r.challenge }
func (r *authRequest) GetNonce() string                      { return r.nonce }
func (r *authRequest) GetRedirectURI() string                { return r.redirectURI }
func (r *authRequest) GetResponseType() oidc.ResponseType    { return r.responseType }
func (r *authRequest) GetResponseMode() oidc.ResponseMode    { return r.responseMode }
func (r *authRequest) GetScopes() []string                   { return r.scopes }
func (r *authRequest) GetState() string                      { return r.state }
func (r *authRequest) GetSubject() string                    { return r.subject }
func (r *authRequest) Done() bool                            { return r.done }

type signingKey struct {
	key *rsa.PrivateKey
	id  string
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.id }

type publicKey struct {
	key *rsa.PublicKey
	id  string
}

func (k publicKey) ID() string                         { return k.id }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.key }
