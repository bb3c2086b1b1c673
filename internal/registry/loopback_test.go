package registry

import (
	"net/http"
	"strings"
	"testing"
)

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		domain string
		want   bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.1:5000", true},
		{"127.1.2.3:5000", true},
		{"localhost", true},
		{"localhost:5000", true},
		{"LOCALHOST:5000", true},
		{"[::1]:5000", true},
		{"::1", true},
		{"[::ffff:127.0.0.1]:5000", true},
		{"docker.io", false},
		{"registry.localhost:5000", false}, // Docker needs it configured insecure
		{"10.0.0.1:5000", false},
		{"192.168.1.10", false},
		{"128.0.0.1:5000", false},
		{"[::2]:5000", false},
		{"localhost.example.com", false},
	}
	for _, tt := range tests {
		if got := isLoopback(tt.domain); got != tt.want {
			t.Errorf("isLoopback(%q): got %t; want %t", tt.domain, got, tt.want)
		}
	}
}

// TestTLSUnlessLoopback checks that plain HTTP goes nowhere but to
// loopback, without dialling anything.
func TestTLSUnlessLoopback(t *testing.T) {
	var sent []string
	rt := tlsUnlessLoopback{roundTripFunc(func(req *http.Request) (*http.Response, error) {
		sent = append(sent, req.URL.String())
		return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
	})}
	tests := []struct {
		url  string
		sent bool
	}{
		{"https://registry.example/v2/", true},
		{"https://10.0.0.1/v2/", true},
		{"http://127.0.0.1:5000/v2/", true},
		{"http://localhost:5000/v2/", true},
		{"http://[::1]:5000/v2/", true},
		{"http://10.0.0.1:5000/v2/", false},
		{"http://registry.example/token", false},
		{"http://registry.localhost/v2/", false},
	}
	for _, tt := range tests {
		sent = nil
		req, err := http.NewRequest(http.MethodGet, tt.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := rt.RoundTrip(req)
		if resp != nil {
			resp.Body.Close()
		}
		if got := len(sent) == 1; got != tt.sent || (err == nil) != tt.sent {
			t.Errorf("GET %s: sent %t, error %v; want sent %t", tt.url, got, err, tt.sent)
		}
		if err != nil && !strings.Contains(err.Error(), "refusing plain HTTP") {
			t.Errorf("GET %s: got %v; want a refusal", tt.url, err)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
