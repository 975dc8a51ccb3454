package fetcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/syncnode/syncnode"
)

// FetchFunc fetches one blob; an error means the attempt failed and the blob
// is retried after a backoff. An error wrapping ErrBusy means the attempt
// did not start: the blob is tried again after BusyDelay, its attempts not
// counted. try is the attempt: the fetch records on it what it tried, and
// may give up its place among the Concurrency running ones (Release).
type FetchFunc func(ctx context.Context, ref syncnode.BlobRef, try *Try) error

// Try is one attempt at a blob as it runs.
type Try struct {
	// Tried are the peers the attempt asked, Holders those it found
	// holding the blob; the fetch sets them, and the attempt's record
	// keeps them.
	Tried, Holders []string
	place          *place
}

// Release gives up the attempt's place among the Concurrency running
// ones, so that the next due blob starts: the attempt has moved its
// blob's bytes and only finishes, on work a slow peer must not stretch
// into every other blob's wait (taking the blob's shares). The attempt
// still runs, its blob is not started again, and its outcome counts as
// before. A second time, or while 4 × Concurrency attempts are finishing
// already, it does nothing.
func (t *Try) Release() {
	if t.place != nil {
		t.place.release()
	}
}

// ErrBusy reports an attempt that did not start because what it needs
// (its holder's places) is taken by other attempts now.
var ErrBusy = errors.New("fetcher: busy")

// BusyDelay is how long a blob whose attempt found its holder busy waits
// before the next, when few wait; it grows with the queue (by BusyDelay
// every 1024 blobs queued), so that a long queue of blobs from one busy
// holder is gone through at about a thousand a second at most.
const BusyDelay = time.Second

// busyDelay returns the wait after a busy attempt with queued blobs.
func busyDelay(queued int, u float64) time.Duration {
	d := BusyDelay * time.Duration(1+queued/1024)
	return d + time.Duration(u*float64(d)/2)
}

// Attempt is what the fetcher keeps of its attempts at one blob: how many
// there were, and how the last went. It is stored, so that a restarted
// node backs off as far as before and why can tell what happened.
type Attempt struct {
	// Count is the number of attempts made.
	Count int
	// Last is when the last attempt ended.
	Last time.Time
	// Err is why the last attempt failed; empty if it succeeded.
	Err string
	// Tried are the peers the last attempt asked, Holders those it found
	// holding the blob.
	Tried, Holders []string
	// Done reports that the last attempt succeeded.
	Done bool
}

// AttemptStore persists each blob's attempt record.
type AttemptStore interface {
	// Attempt returns ref's record, the zero Attempt if there is none.
	Attempt(ref syncnode.BlobRef) (Attempt, error)
	// SetAttempt replaces ref's record.
	SetAttempt(ref syncnode.BlobRef, a Attempt) error
}

// ErrStopped reports an enqueue on a fetcher that has stopped.
var ErrStopped = errors.New("fetcher: stopped")

// Status is what the fetcher knows of one blob.
type Status struct {
	Queued, Running bool
	Attempts        int
	NextAttempt     time.Time // zero unless queued
}

// Fetcher runs fetches from its queue: at most Concurrency at once, each
// blob as soon as its next attempt is due. One starter goroutine waits for
// the head's deadline or a wake-up; each fetch runs in its own goroutine.
// An attempt that has its bytes and only finishes (takes the blob's
// shares) can give its place to the next one with the release function
// its FetchFunc is given.
type Fetcher struct {
	cfg      Config
	fetch    FetchFunc
	attempts AttemptStore
	log      *slog.Logger

	mu      sync.Mutex
	rng     *rand.Rand
	q       Queue
	running map[syncnode.BlobRef]struct{}
	// active counts the running attempts that hold a place of
	// Concurrency, finishing those that released theirs.
	active, finishing int
	stopped           bool

	wake   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	exited chan struct{}
}

// New returns a fetcher; Start runs it. rng supplies the backoff jitter.
// Zero fields of cfg take their defaults, and a cfg that Validate refuses
// is an error.
func New(cfg Config, fetch FetchFunc, attempts AttemptStore, rng *rand.Rand, log *slog.Logger) (*Fetcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Fetcher{
		cfg: cfg, fetch: fetch, attempts: attempts, log: log, rng: rng,
		running: map[syncnode.BlobRef]struct{}{},
		wake:    make(chan struct{}, 1),
		exited:  make(chan struct{}),
	}, nil
}

// Start runs the starter goroutine until ctx is done or Stop is called.
func (f *Fetcher) Start(ctx context.Context) {
	ctx, f.cancel = context.WithCancel(ctx)
	go f.run(ctx)
}

// Stop cancels running fetches and waits for every goroutine to exit.
func (f *Fetcher) Stop() {
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
	if f.cancel != nil {
		f.cancel()
		f.WaitForExit()
	}
}

// WaitForExit blocks until the starter and every fetch have returned.
func (f *Fetcher) WaitForExit() { <-f.exited }

func (f *Fetcher) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Enqueue queues ref for fetching. A blob already queued or being fetched is
// left as it is. A blob never tried is due at once; one with stored
// attempts (from before a restart) waits the backoff those attempts earned.
func (f *Fetcher) Enqueue(ref syncnode.BlobRef) error {
	if f.busy(ref) {
		return nil
	}
	a, err := f.attempts.Attempt(ref)
	n := a.Count
	if err != nil {
		return fmt.Errorf("fetcher: attempts of %s: %w", ref, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return ErrStopped
	}
	if _, ok := f.running[ref]; ok {
		return nil
	}
	next := time.Now()
	if n > 0 {
		next = next.Add(f.cfg.Backoff(n, f.rng.Float64()))
	}
	if f.q.Push(ref, next, n) {
		f.poke()
	}
	return nil
}

// RetryNow makes those of refs that wait in the queue due at once — a
// holder of theirs has just come back — keeping their attempt counts, so a
// holder that stays away still meets the backoff. It returns how many it
// moved.
func (f *Fetcher) RetryNow(refs []syncnode.BlobRef) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	moved := 0
	for _, ref := range refs {
		next, n, ok := f.q.Next(ref)
		if !ok || !next.After(now) {
			continue
		}
		f.q.Remove(ref)
		f.q.Push(ref, now, n)
		moved++
	}
	if moved > 0 {
		f.poke()
	}
	return moved
}

// Drop takes ref out of the queue, if it waits there (one being fetched
// runs on): nothing wants it any more. It reports whether it did.
func (f *Fetcher) Drop(ref syncnode.BlobRef) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.q.Remove(ref)
}

func (f *Fetcher) busy(ref syncnode.BlobRef) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, running := f.running[ref]
	return running || f.q.Contains(ref)
}

// Len returns how many blobs are queued or being fetched.
func (f *Fetcher) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.q.Len() + len(f.running)
}

// Status reports what the fetcher knows of ref.
func (f *Fetcher) Status(ref syncnode.BlobRef) Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s Status
	if next, n, ok := f.q.Next(ref); ok {
		s.Queued, s.NextAttempt, s.Attempts = true, next, n
	}
	_, s.Running = f.running[ref]
	return s
}

func (f *Fetcher) run(ctx context.Context) {
	defer close(f.exited)
	defer f.wg.Wait()
	for {
		wait, idle := f.startDue(ctx)
		var timer *time.Timer
		var fire <-chan time.Time
		if !idle {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-f.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// startDue starts every due fetch there is room for and says how long to
// wait for the next one (idle: until woken).
func (f *Fetcher) startDue(ctx context.Context) (wait time.Duration, idle bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	for f.active < f.cfg.Concurrency {
		_, next, ok := f.q.Peek()
		if !ok {
			return 0, true
		}
		if next.After(now) {
			return next.Sub(now), false
		}
		ref, _, n, _ := f.q.Pop()
		f.running[ref] = struct{}{}
		f.active++
		f.wg.Add(1)
		go f.attempt(ctx, ref, n)
	}
	return 0, true // full: a finishing fetch wakes us
}

// place is an attempt's place among the Concurrency running ones.
type place struct {
	f        *Fetcher
	released bool // under f.mu
}

// release gives up pl (see Try.Release).
func (pl *place) release() {
	f := pl.f
	f.mu.Lock()
	if pl.released || f.finishing >= 4*f.cfg.Concurrency {
		f.mu.Unlock()
		return
	}
	pl.released = true
	f.active--
	f.finishing++
	f.mu.Unlock()
	f.poke()
}

func (f *Fetcher) attempt(ctx context.Context, ref syncnode.BlobRef, n int) {
	defer f.wg.Done()
	pl := &place{f: f}
	try := &Try{place: pl}
	err := f.fetch(ctx, ref, try)
	done := func() { // under f.mu
		delete(f.running, ref)
		if pl.released {
			f.finishing--
		} else {
			f.active--
		}
	}
	if ctx.Err() != nil && err != nil {
		// Stopped mid-fetch: not the blob's fault, and not counted.
		f.mu.Lock()
		done()
		f.mu.Unlock()
		return
	}
	if errors.Is(err, ErrBusy) {
		// Not started: tried again soon, not counted.
		f.mu.Lock()
		done()
		f.q.Push(ref, time.Now().Add(busyDelay(f.q.Len(), f.rng.Float64())), n)
		f.mu.Unlock()
		f.poke()
		return
	}
	n++
	rec := Attempt{Count: n, Last: time.Now(), Tried: try.Tried, Holders: try.Holders, Done: err == nil}
	if err != nil {
		rec.Err = err.Error()
	}
	if serr := f.attempts.SetAttempt(ref, rec); serr != nil {
		f.log.Error("persist fetch attempts", "blob", ref, "err", serr)
	}
	f.mu.Lock()
	done()
	if err == nil {
		f.log.Debug("fetched", "blob", ref, "attempts", n)
	} else {
		delay := f.cfg.Backoff(n, f.rng.Float64())
		f.q.Push(ref, time.Now().Add(delay), n)
		f.log.Info("fetch failed", "blob", ref, "attempts", n, "retry_in", delay, "err", err)
	}
	f.mu.Unlock()
	f.poke()
}

// MemAttempts is an AttemptStore in memory.
type MemAttempts struct {
	mu sync.Mutex
	m  map[syncnode.BlobRef]Attempt
}

// Attempt implements AttemptStore.
func (m *MemAttempts) Attempt(ref syncnode.BlobRef) (Attempt, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.m[ref], nil
}

// SetAttempt implements AttemptStore.
func (m *MemAttempts) SetAttempt(ref syncnode.BlobRef, a Attempt) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = map[syncnode.BlobRef]Attempt{}
	}
	m.m[ref] = a
	return nil
}

// Queued returns up to max blobs the fetcher has in hand: those being
// fetched, then those queued, soonest first.
func (f *Fetcher) Queued(max int) []syncnode.BlobRef {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []syncnode.BlobRef
	for ref := range f.running {
		out = append(out, ref)
	}
	slices.SortFunc(out, func(a, b syncnode.BlobRef) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
	out = out[:min(max, len(out))]
	return append(out, f.q.Refs(max-len(out))...)
}
