package oidcauth_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/dockfleet/dockfleet/internal/oidcauth"
	"github.com/dockfleet/dockfleet/internal/oidctest"
)

// The CLI's login end to end: the device flow at a real provider, the user
// approving the code shown, and the server's Verifier accepting the token.
func TestDeviceLogin(t *testing.T) {
	p := oidctest.Start(t)
	shown := 0
	raw, err := oidcauth.DeviceLogin(t.Context(), p.Issuer(), p.ClientID(), p.Client(),
		func(uri, complete, code string) {
			shown++
			if uri != p.Issuer()+"/device" || !strings.Contains(complete, "user_code="+code) || code == "" {
				t.Errorf("shown %q, %q, %q; want the provider's device page and a code", uri, complete, code)
			}
			if err := p.ApproveDevice(code, "bob"); err != nil {
				t.Error(err)
			}
		})
	if err != nil {
		t.Fatalf("DeviceLogin: %v", err)
	}
	if shown != 1 {
		t.Errorf("show was called %d times; want once", shown)
	}
	id, err := newVerifier(t, p, nil, nil).Verify(t.Context(), raw)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id.Username != "bob" || id.Subject != "sub-bob" || id.Email != "bob@example.com" || !slices.Equal(id.Groups, []string{"dev"}) {
		t.Errorf("got %+v; want bob, sub-bob, bob@example.com in the group dev", id)
	}
}

func TestDeviceLoginDenied(t *testing.T) {
	p := oidctest.Start(t)
	_, err := oidcauth.DeviceLogin(t.Context(), p.Issuer(), p.ClientID(), p.Client(),
		func(_, _, code string) {
			if err := p.DenyDevice(code); err != nil {
				t.Error(err)
			}
		})
	if !errors.Is(err, oidcauth.ErrDeviceDenied) {
		t.Fatalf("got %v; want %v", err, oidcauth.ErrDeviceDenied)
	}
}

// A provider that does not list the groups scope is not asked for it;
// its tokens then have no groups.
func TestDeviceLoginWithoutGroupsScope(t *testing.T) {
	p := oidctest.Start(t, oidctest.WithoutGroupsScope(), oidctest.WithAutoApprove("alice"))
	raw, err := oidcauth.DeviceLogin(t.Context(), p.Issuer(), p.ClientID(), p.Client(), func(_, _, _ string) {})
	if err != nil {
		t.Fatalf("DeviceLogin: %v", err)
	}
	id, err := newVerifier(t, p, nil, nil).Verify(t.Context(), raw)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id.Username != "alice" || id.Groups != nil {
		t.Errorf("got username %q, groups %q; want alice and no groups", id.Username, id.Groups)
	}
}

func TestDeviceLoginConfidentialClient(t *testing.T) {
	p := oidctest.Start(t, oidctest.WithClientSecret("s3cret"), oidctest.WithAutoApprove("alice"))
	raw, err := oidcauth.DeviceLogin(t.Context(), p.Issuer(), p.ClientID(), p.Client(), func(_, _, _ string) {},
		oidcauth.WithClientSecret("s3cret"))
	if err != nil {
		t.Fatalf("DeviceLogin: %v", err)
	}
	if _, err := newVerifier(t, p, nil, nil).Verify(t.Context(), raw); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestDeviceLoginUnreachable(t *testing.T) {
	p := oidctest.Start(t)
	p.SetDown(true)
	_, err := oidcauth.DeviceLogin(t.Context(), p.Issuer(), p.ClientID(), p.Client(), func(_, _, _ string) {
		t.Error("show called though the provider is down")
	})
	if err == nil || !strings.Contains(err.Error(), "discovery of the identity provider "+p.Issuer()) {
		t.Fatalf("got %v; want an error naming the discovery of %s", err, p.Issuer())
	}
}
