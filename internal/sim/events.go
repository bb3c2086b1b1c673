package sim

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
)

// Event is one line of Config.Events, a JSON object, for the benchmark
// harness:
//
//	{"t":1767225600123456789,"agent":"h-sim-7","event":"started"}
//	{"t":1767225600223456789,"agent":"h-sim-7","event":"connected"}
//	{"t":1767225601123456789,"agent":"h-sim-7","event":"desired","generation":3,"instances":1}
//	{"t":1767225609123456789,"agent":"h-sim-7","event":"disconnected","error":"rpc error: …"}
//	{"t":1767225609123456789,"agent":"h-sim-7","event":"failed","error":"enrollment refused …"}
//
// Events are written in the order the agents report them, which may differ
// from the order of T by a little.
type Event struct {
	// T is when it happened, in nanoseconds since the Unix epoch.
	T     int64  `json:"t"`
	Agent string `json:"agent"`
	// Event is "started" (the agent began to enroll or connect),
	// "connected" (the server welcomed it on a new stream), "desired" (it
	// took a desired state and acked it), "disconnected" (its stream ended)
	// or "failed" (it stopped for good; the simulation ends).
	Event string `json:"event"`
	// Generation and Instances describe a desired state: its generation
	// and how many instances it places on the node.
	Generation uint64 `json:"generation,omitempty"`
	Instances  int    `json:"instances,omitempty"`
	// Error says why a stream ended or an agent failed.
	Error string `json:"error,omitempty"`
}

// appendJSON appends e as one line, with its agent's name already quoted:
// a desired state's instances are written even when zero.
func (e Event) appendJSON(b, quotedAgent []byte) []byte {
	b = append(b, `{"t":`...)
	b = strconv.AppendInt(b, e.T, 10)
	b = append(b, `,"agent":`...)
	b = append(b, quotedAgent...)
	b = append(b, `,"event":`...)
	b = append(b, quote(e.Event)...)
	if e.Event == "desired" {
		b = append(b, `,"generation":`...)
		b = strconv.AppendUint(b, e.Generation, 10)
		b = append(b, `,"instances":`...)
		b = strconv.AppendInt(b, int64(e.Instances), 10)
	}
	if e.Error != "" {
		b = append(b, `,"error":`...)
		b = append(b, quote(e.Error)...)
	}
	return append(b, "}\n"...)
}

// quote returns s as a JSON string.
func quote(s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return b
}

// eventLog writes events from every agent through one goroutine, so that
// an agent's hook never waits for the output, unless thousands are queued.
type eventLog struct {
	w     *bufio.Writer
	log   *slog.Logger
	lines chan []byte
	done  chan struct{} // closed by close: no more events are taken
	ended chan struct{} // closed by run when it has written everything
}

func newEventLog(w io.Writer, log *slog.Logger) *eventLog {
	return &eventLog{w: bufio.NewWriterSize(w, 64<<10), log: log,
		lines: make(chan []byte, 4096), done: make(chan struct{}), ended: make(chan struct{})}
}

// add queues e; it drops e once the log is closed, as an agent's
// goroutines may report after its Run returned.
func (l *eventLog) add(e Event, quotedAgent []byte) {
	line := e.appendJSON(make([]byte, 0, 128), quotedAgent)
	select {
	case l.lines <- line:
	case <-l.done:
	}
}

// run writes the queued lines, flushing whenever the queue is empty, until
// close; then it writes what is left.
func (l *eventLog) run() {
	defer close(l.ended)
	failed := false
	write := func(line []byte) {
		if _, err := l.w.Write(line); err != nil && !failed {
			failed = true
			l.log.Error("writing events; later events are lost", "err", err)
		}
	}
	flush := func() {
		if err := l.w.Flush(); err != nil && !failed {
			failed = true
			l.log.Error("writing events; later events are lost", "err", err)
		}
	}
	for {
		select {
		case line := <-l.lines:
			write(line)
			if len(l.lines) == 0 {
				flush()
			}
		case <-l.done:
			for {
				select {
				case line := <-l.lines:
					write(line)
				default:
					flush()
					return
				}
			}
		}
	}
}

// close stops taking events and waits until run has written the queued ones.
func (l *eventLog) close() {
	close(l.done)
	<-l.ended
}
