package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	tests := []struct {
		name       string
		broken     bool
		path       string
		wantStatus int
		wantBody   string
	}{
		{"healthz", false, "/healthz", http.StatusOK, "ok\n"},
		{"healthz broken", true, "/healthz", http.StatusInternalServerError, "broken\n"},
		{"version", false, "/version", http.StatusOK, "v7\n"},
		{"version broken", true, "/version", http.StatusOK, "v7\n"},
		{"greeting", false, "/", http.StatusOK, "hello from v7 on box1\n"},
		{"unknown path", false, "/nope", http.StatusNotFound, "404 page not found\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			newHandler("v7", "box1", tt.broken).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if rec.Code != tt.wantStatus {
				t.Errorf("status: got %d; want %d", rec.Code, tt.wantStatus)
			}
			if got := rec.Body.String(); got != tt.wantBody {
				t.Errorf("body: got %q; want %q", got, tt.wantBody)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			io.WriteString(w, "ok")
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		default:
			http.Error(w, "bad", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()

	tests := []struct {
		name      string
		url       string
		wantCode  int
		wantError string
	}{
		{"2xx passes", srv.URL + "/ok", 0, ""},
		{"3xx passes", srv.URL + "/moved", 0, ""},
		{"5xx fails", srv.URL + "/bad", 1, "status 500"},
		{"refused fails", "http://127.0.0.1:1/", 1, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := run([]string{"-check", tt.url}, &stdout, &stderr); got != tt.wantCode {
				t.Errorf("exit code: got %d; want %d (stderr %q)", got, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantError) {
				t.Errorf("stderr: got %q; want it to contain %q", stderr.String(), tt.wantError)
			}
		})
	}
}

func TestServe(t *testing.T) {
	// An unusable address makes run return at once with an error instead of serving.
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"-addr", "127.0.0.1:-1"}, &stdout, &stderr) }()
	select {
	case code := <-done:
		if code != 1 {
			t.Errorf("exit code: got %d; want 1", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return for a bad address")
	}
}
