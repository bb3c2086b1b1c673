package httpguard

import (
	"net/netip"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// checkTake takes from k's bucket and fails the test unless the answer is
// want, with a wait of wantWait when refused.
func checkTake[K comparable](t *testing.T, bs *buckets[K], k K, want bool, wantWait time.Duration) {
	t.Helper()
	ok, wait := bs.take(k)
	if ok != want || wait != wantWait {
		t.Fatalf("take(%v) = %v, %v; want %v, %v", k, ok, wait, want, wantWait)
	}
}

func TestBucketsTakeAndRefill(t *testing.T) {
	clock := clockwork.NewFakeClock()
	bs := newBuckets[string](500*time.Millisecond, 3, 10, clock) // 3 at once, 2 a second after
	for range 3 {
		checkTake(t, bs, "a", true, 0)
	}
	checkTake(t, bs, "a", false, 500*time.Millisecond)
	checkTake(t, bs, "b", true, 0) // its own bucket
	clock.Advance(200 * time.Millisecond)
	checkTake(t, bs, "a", false, 300*time.Millisecond) // a refusal spends nothing
	clock.Advance(300 * time.Millisecond)
	checkTake(t, bs, "a", true, 0)
	checkTake(t, bs, "a", false, 500*time.Millisecond)
	clock.Advance(time.Hour)
	for range 3 { // refilled up to the burst, no more
		checkTake(t, bs, "a", true, 0)
	}
	checkTake(t, bs, "a", false, 500*time.Millisecond)
}

func TestBucketsGiveAndReset(t *testing.T) {
	clock := clockwork.NewFakeClock()
	bs := newBuckets[string](time.Minute, 2, 10, clock)
	checkTake(t, bs, "a", true, 0)
	checkTake(t, bs, "a", true, 0)
	bs.give("a")
	checkTake(t, bs, "a", true, 0)
	checkTake(t, bs, "a", false, time.Minute)
	bs.reset("a")
	checkTake(t, bs, "a", true, 0)
	checkTake(t, bs, "a", true, 0)
	checkTake(t, bs, "a", false, time.Minute)
	for range 5 { // up to the burst, no more
		bs.give("a")
	}
	checkTake(t, bs, "a", true, 0)
	checkTake(t, bs, "a", true, 0)
	checkTake(t, bs, "a", false, time.Minute)
	bs.give("unknown") // a full bucket: nothing to give back
	if n := bs.len(); n != 1 {
		t.Errorf("%d buckets kept; want 1", n)
	}
}

// A million source addresses, each sending one request, keep the map at
// its cap; a source that keeps sending keeps its (empty) bucket however
// many others come and go, since the one used least recently goes first.
func TestBucketsStayBounded(t *testing.T) {
	const max, sources = 1000, 1_000_000
	clock := clockwork.NewFakeClock()
	bs := newBuckets[netip.Addr](time.Second, 5, max, clock)
	victim := netip.MustParseAddr("192.0.2.1")
	for range 5 {
		checkTake(t, bs, victim, true, 0)
	}
	for i := range sources {
		b := [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
		if ok, _ := bs.take(netip.AddrFrom4(b)); !ok {
			t.Fatalf("source %d of %d was refused its first request", i, sources)
		}
		if i%500 == 0 {
			if ok, _ := bs.take(victim); ok {
				t.Fatalf("after %d other sources the drained source was let through: its bucket was forgotten", i)
			}
		}
		if n := len(bs.byKey); n > max || bs.lru.Len() != n {
			t.Fatalf("after %d sources %d buckets kept (%d in the LRU list); want %d at most", i+1, n, bs.lru.Len(), max)
		}
	}
}

// Buckets that filled up again are forgotten at the next sweep; those
// still short of tokens are kept.
func TestBucketsSweepForgetsFullOnes(t *testing.T) {
	clock := clockwork.NewFakeClock()
	bs := newBuckets[string](time.Second, 10, 100, clock)
	checkTake(t, bs, "idle", true, 0)
	for range 10 {
		checkTake(t, bs, "busy", true, 0)
	}
	clock.Advance(sweepInterval - 5*time.Second)
	for range 10 {
		checkTake(t, bs, "busy", true, 0) // refilled since; drained again
	}
	clock.Advance(5 * time.Second)
	checkTake(t, bs, "other", true, 0) // sweeps: "idle" is full, "busy" has 5 tokens
	if _, ok := bs.byKey["idle"]; ok {
		t.Error(`the full bucket "idle" was kept after a sweep; want it forgotten`)
	}
	if _, ok := bs.byKey["busy"]; !ok {
		t.Error(`the bucket "busy", short of tokens, was forgotten; want it kept`)
	}
}
