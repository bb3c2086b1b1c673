package oidcauth

import (
	"slices"
	"testing"
)

func TestDeviceScopes(t *testing.T) {
	tests := []struct {
		name             string
		asked, supported []string
		want             []string
	}{
		{"groups listed", nil, []string{"openid", "profile", "email", "groups"}, []string{"openid", "profile", "email", "groups"}},
		{"groups not listed", nil, []string{"openid", "profile", "email"}, []string{"openid", "profile", "email"}},
		{"no scopes_supported", nil, nil, []string{"openid", "profile", "email"}},
		{"asked", []string{"openid", "email"}, []string{"groups"}, []string{"openid", "email"}},
		{"asked without openid", []string{"email", "roles"}, nil, []string{"openid", "email", "roles"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := deviceScopes(tt.asked, tt.supported); !slices.Equal(got, tt.want) {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func FuzzPeek(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2lkcCIsImF1ZCI6ImMiLCJleHAiOjE3MDAwMDAwMDB9.c2ln")
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		_, _ = peek(raw) // never panics
	})
}
