package httpguard

import (
	"container/list"
	"math"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// sweepInterval is how often the buckets that have filled up again are
// forgotten: a full bucket is the same as none.
const sweepInterval = time.Minute

// buckets keeps a token bucket for each key (a source address, a token ID,
// a user name), max of them at most, so that a client cycling through
// addresses or names costs bounded memory. A key seen for the first time
// gets a full bucket. Buckets that have filled up again are forgotten once
// a sweepInterval; when max are kept and none is full, the one used least
// recently goes to make room: its key starts over with a full bucket, which
// a client holding that many keys could have had anyway.
//
// A bucket is kept as the time it will be full again (the generic cell
// rate algorithm): one number, and exact waits.
type buckets[K comparable] struct {
	every time.Duration // one token comes back every
	burst time.Duration // burst tokens' worth of time
	max   int
	clock clockwork.Clock

	mu    sync.Mutex
	byKey map[K]*list.Element // of *bucket[K]
	lru   list.List           // front: used most recently
	swept time.Time
}

type bucket[K comparable] struct {
	key  K
	full time.Time // when the bucket is full again
}

func newBuckets[K comparable](every time.Duration, burst, max int, clock clockwork.Clock) *buckets[K] {
	return &buckets[K]{every: every, burst: time.Duration(burst) * every, max: max, clock: clock,
		byKey: map[K]*list.Element{}, swept: clock.Now()}
}

// interval is the time one token takes to come back at rate tokens a
// second; a rate below one an hour counts as one an hour, which keeps a
// bucket's times far from overflowing.
func interval(rate float64) time.Duration {
	return time.Duration(math.Round(min(float64(time.Second)/rate, float64(time.Hour))))
}

// take takes a token from k's bucket. Without one it reports false and
// how long until k has one.
func (bs *buckets[K]) take(k K) (ok bool, wait time.Duration) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	now := bs.clock.Now()
	bs.sweep(now)
	b := bs.get(k, now)
	full := later(b.full, now).Add(bs.every)
	if late := full.Sub(now) - bs.burst; late > 0 {
		return false, late
	}
	b.full = full
	return true, 0
}

// give puts back a token taken from k's bucket.
func (bs *buckets[K]) give(k K) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if e, ok := bs.byKey[k]; ok {
		b := e.Value.(*bucket[K])
		b.full = later(b.full.Add(-bs.every), bs.clock.Now())
	}
}

// reset fills k's bucket.
func (bs *buckets[K]) reset(k K) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if e, ok := bs.byKey[k]; ok {
		bs.lru.Remove(e)
		delete(bs.byKey, k)
	}
}

// len is how many buckets are kept.
func (bs *buckets[K]) len() int {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	return len(bs.byKey)
}

// get returns k's bucket, marked as used most recently; bs.mu is held.
func (bs *buckets[K]) get(k K, now time.Time) *bucket[K] {
	if e, ok := bs.byKey[k]; ok {
		bs.lru.MoveToFront(e)
		return e.Value.(*bucket[K])
	}
	if len(bs.byKey) >= bs.max {
		oldest := bs.lru.Back()
		bs.lru.Remove(oldest)
		delete(bs.byKey, oldest.Value.(*bucket[K]).key)
	}
	b := &bucket[K]{key: k, full: now}
	bs.byKey[k] = bs.lru.PushFront(b)
	return b
}

// sweep forgets the full buckets, at most once a sweepInterval; bs.mu is held.
func (bs *buckets[K]) sweep(now time.Time) {
	if now.Sub(bs.swept) < sweepInterval {
		return
	}
	bs.swept = now
	for e := bs.lru.Front(); e != nil; {
		next := e.Next()
		if b := e.Value.(*bucket[K]); !b.full.After(now) {
			bs.lru.Remove(e)
			delete(bs.byKey, b.key)
		}
		e = next
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
