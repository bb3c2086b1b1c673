package httpguard

import (
	"errors"
	"io"
	"net/http"
	"sync/atomic"
)

// capBody is a request body cut at its route's limit (http.MaxBytesReader,
// which also closes an HTTP/1.1 connection after the answer, rather than
// read the rest); over says whether the handler tried to read past it.
type capBody struct {
	io.ReadCloser
	over atomic.Bool // read by the handler's goroutine, which may not be the reader's
}

func (b *capBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		b.over.Store(true)
	}
	return n, err
}

// capWriter is the ResponseWriter of a request with a body. Once the
// handler has read past the body's limit, the first status it writes (or
// its return without one) becomes the 413 of refuse, and what it writes
// after is dropped: a handler that sees only a read error would answer
// 400 or 500, and the client must learn that its body was too large.
type capWriter struct {
	http.ResponseWriter
	body   *capBody
	refuse func() // writes the 413 on ResponseWriter

	wrote   bool // a final status went out: the handler's or refuse's
	refused bool
}

func (w *capWriter) WriteHeader(code int) {
	switch {
	case w.refused:
		return
	case !w.wrote && w.body.over.Load():
		w.wrote, w.refused = true, true
		w.refuse()
		return
	case code < 200 && code != http.StatusSwitchingProtocols:
		// Informational (103 Early Hints): a final status comes after.
	default:
		w.wrote = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *capWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.refused {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// Flush sends what was written so far, as http.Flusher: a long poll or a
// stream of events keeps working behind the guard.
func (w *capWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.refused {
		return
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's ResponseWriter
// (deadlines, hijacking).
func (w *capWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish answers 413 for a handler that read past its body's limit and
// returned without writing a status.
func (w *capWriter) finish() {
	if !w.wrote && w.body.over.Load() {
		w.wrote, w.refused = true, true
		w.refuse()
	}
}
