package fetcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncnode/syncnode"
)

var discard = slog.New(slog.DiscardHandler)

// fakeFetch simulates a fetch of work (fake time) and fails the first
// failFirst attempts of each blob. It records how many attempts each blob
// saw and the most fetches that ran at once.
type fakeFetch struct {
	work      time.Duration
	failFirst int

	mu       sync.Mutex
	calls    map[syncnode.BlobRef]int
	at       map[syncnode.BlobRef][]time.Time
	done     map[syncnode.BlobRef]bool
	cur, max int
}

func newFakeFetch(work time.Duration, failFirst int) *fakeFetch {
	return &fakeFetch{work: work, failFirst: failFirst, calls: map[syncnode.BlobRef]int{},
		at: map[syncnode.BlobRef][]time.Time{}, done: map[syncnode.BlobRef]bool{}}
}

func (f *fakeFetch) fetch(ctx context.Context, ref syncnode.BlobRef, _ *Try) error {
	f.mu.Lock()
	f.calls[ref]++
	call := f.calls[ref]
	f.at[ref] = append(f.at[ref], time.Now())
	f.cur++
	f.max = max(f.max, f.cur)
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.cur--; f.mu.Unlock() }()
	select {
	case <-time.After(f.work):
	case <-ctx.Done():
		return ctx.Err()
	}
	if call <= f.failFirst {
		return fmt.Errorf("injected failure %d", call)
	}
	f.mu.Lock()
	f.done[ref] = true
	f.mu.Unlock()
	return nil
}

func (f *fakeFetch) doneCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.done)
}

func newFetcher(t *testing.T, cfg Config, fetch FetchFunc, st AttemptStore) *Fetcher {
	t.Helper()
	f, err := New(cfg, fetch, st, rand.New(rand.NewPCG(5, 5)), discard)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// runUntilDone enqueues blobs (dups times each), then waits in fake time
// until all are fetched, returning the simulated time it took.
func runUntilDone(t *testing.T, ff *fakeFetch, blobs, dups, workers int) time.Duration {
	cfg := Config{}
	cfg.Concurrency = workers
	f := newFetcher(t, cfg, ff.fetch, &MemAttempts{})
	f.Start(t.Context())
	defer f.Stop()
	start := time.Now()
	for range dups {
		for i := range blobs {
			if err := f.Enqueue(testRef(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for ff.doneCount() < blobs {
		time.Sleep(10 * time.Millisecond) // fake time: advances only when all goroutines block
	}
	synctest.Wait()
	if f.Len() != 0 {
		t.Fatalf("%d blobs left in the fetcher", f.Len())
	}
	return time.Since(start)
}

func TestFakeFetch100BlobsOn10Workers(t *testing.T) {
	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		ff := newFakeFetch(500*time.Millisecond, 0)
		took := runUntilDone(t, ff, 100, 1, 10)
		t.Logf("100 blobs × 500 ms on 10 workers: %v simulated", took)
		if took < 5*time.Second || took > 5*time.Second+50*time.Millisecond {
			t.Fatalf("took %v simulated, want ≈ 5 s", took)
		}
		if ff.max != 10 {
			t.Fatalf("at most %d fetches ran at once, want 10", ff.max)
		}
	})
	if w := time.Since(wall); w > 2*time.Second {
		t.Fatalf("wall time %v, want well under 2 s", w)
	}
}

func TestFakeFetchWithFailuresAndDuplicates(t *testing.T) {
	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		ff := newFakeFetch(500*time.Millisecond, 1)
		took := runUntilDone(t, ff, 100, 3, 10)
		t.Logf("with one failure per blob and 3 starts each: %v simulated", took)
		// Two full rounds of 5 s, plus at most the first retry delay
		// (1–2 s) of the last blobs to fail.
		if took < 10*time.Second || took > 12*time.Second+50*time.Millisecond {
			t.Fatalf("took %v simulated, want ≈ 10 s + the first retry delay", took)
		}
		for ref, n := range ff.calls {
			if n != 2 {
				t.Fatalf("%s fetched %d times, want 2 (duplicates ignored)", ref, n)
			}
			gap := ff.at[ref][1].Sub(ff.at[ref][0]) - 500*time.Millisecond
			if gap < time.Second {
				t.Fatalf("%s retried %v after failing, before the 1 s minimum", ref, gap)
			}
		}
	})
	if w := time.Since(wall); w > 2*time.Second {
		t.Fatalf("wall time %v, want well under 2 s", w)
	}
}

func TestBackoff(t *testing.T) {
	c := Config{}
	if d := c.Backoff(0, 0); d != 500*time.Millisecond {
		t.Fatalf("Backoff(0, 0) = %v", d)
	}
	if d := c.Backoff(1, 0.999); d < time.Second || d >= 2*time.Second {
		t.Fatalf("Backoff(1) = %v, want 1–2 s", d)
	}
	if a, b := c.Backoff(20, 0), c.Backoff(40, 0); a != b || a < 6*24*time.Hour {
		t.Fatalf("cap: Backoff(20)=%v Backoff(40)=%v, want equal and ≈ 6 days", a, b)
	}
	for _, bad := range []Config{{Concurrency: -1}, {BaseDelay: -1}, {MaxShift: 31}, {MaxShift: -2}, {ScanFactor: -2}} {
		if !errors.Is(bad.Validate(), ErrConfig) {
			t.Fatalf("%+v validated", bad)
		}
	}
	if d := (Config{Jitter: -1, MaxShift: -1}).Backoff(5, 0.9); d != 500*time.Millisecond {
		t.Fatalf("no jitter, no doubling: Backoff(5) = %v", d)
	}
}

func TestScanSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := Config{}
		ctx, cancel := context.WithCancel(t.Context())
		start := time.Now()
		var at []time.Duration
		done := make(chan struct{})
		go func() {
			defer close(done)
			RunScans(ctx, cfg, discard, func(context.Context) error {
				at = append(at, time.Since(start))
				time.Sleep(2 * time.Second) // each scan takes 2 s
				if len(at) == 3 {
					cancel()
				}
				return errors.New("scan errors are logged, not fatal")
			})
		}()
		<-done
		want := []time.Duration{10 * time.Second, 320 * time.Second, 630 * time.Second} // 10; 10+2+300+8; 320+2+300+8
		if len(at) != 3 || at[0] != want[0] || at[1] != want[1] || at[2] != want[2] {
			t.Fatalf("scans at %v, want %v", at, want)
		}
	})
}

func TestStopCancelsRunningFetches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ff := newFakeFetch(time.Hour, 0)
		st := &MemAttempts{}
		cfg := Config{}
		cfg.Concurrency = 4
		f := newFetcher(t, cfg, ff.fetch, st)
		f.Start(t.Context())
		for i := range 10 {
			f.Enqueue(testRef(i))
		}
		synctest.Wait()
		if ff.cur != 4 {
			t.Fatalf("%d fetches running, want the concurrency limit 4", ff.cur)
		}
		f.Stop()
		if ff.cur != 0 {
			t.Fatalf("%d fetches still running after Stop", ff.cur)
		}
		if a, _ := st.Attempt(testRef(0)); a.Count != 0 {
			t.Fatalf("a cancelled fetch counted as an attempt: %d", a.Count)
		}
		if err := f.Enqueue(testRef(99)); !errors.Is(err, ErrStopped) {
			t.Fatalf("Enqueue after Stop: %v", err)
		}
	})
}

// TestRetryNowSkipsTheBackoff: a blob whose fetches failed five times
// waits a backoff of about a minute; RetryNow makes it due at once, with
// its attempt count kept, so the next failure backs off further.
func TestRetryNowSkipsTheBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ff := newFakeFetch(10*time.Millisecond, 6)
		f := newFetcher(t, Config{}, ff.fetch, &MemAttempts{})
		f.Start(t.Context())
		defer f.Stop()
		ref := testRef(3)
		if err := f.Enqueue(ref); err != nil {
			t.Fatal(err)
		}
		ff.waitCalls(ref, 5, 100*time.Millisecond)
		time.Sleep(50 * time.Millisecond) // the fifth attempt ends
		synctest.Wait()
		st := f.Status(ref)
		if !st.Queued || time.Until(st.NextAttempt) < 15*time.Second {
			t.Fatalf("after 5 failures: %+v, want a long backoff", st)
		}
		start := time.Now()
		if moved := f.RetryNow([]syncnode.BlobRef{ref, testRef(99)}); moved != 1 {
			t.Fatalf("RetryNow moved %d, want 1", moved)
		}
		ff.waitCalls(ref, 6, time.Millisecond)
		if waited := time.Since(start); waited > 10*time.Millisecond {
			t.Fatalf("the retry came %v after RetryNow", waited)
		}
		time.Sleep(50 * time.Millisecond)
		synctest.Wait()
		if st := f.Status(ref); st.Attempts != 6 || time.Until(st.NextAttempt) < 30*time.Second {
			t.Fatalf("after the retried failure: %+v, want 6 attempts and a longer backoff", st)
		}
	})
}

// waitCalls waits, looking every step of the bubble's time, until ref has
// been fetched n times.
func (ff *fakeFetch) waitCalls(ref syncnode.BlobRef, n int, step time.Duration) {
	for {
		ff.mu.Lock()
		k := ff.calls[ref]
		ff.mu.Unlock()
		if k == n {
			return
		}
		time.Sleep(step)
	}
}

// TestReleaseFreesThePlaceNotTheBlob: attempts that have their bytes after
// 100 ms and then wait 10 s on a slow peer for their shares give up their
// places, so 40 blobs on 4 places all have their bytes within a second,
// not after 10 s per round of 4. Finishing attempts are capped at 4 ×
// Concurrency, a blob is never started twice while its attempt finishes,
// and the attempts still count: each blob is fetched once and done.
func TestReleaseFreesThePlaceNotTheBlob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const blobs, places = 40, 4
		var mu sync.Mutex
		bytesAt := map[syncnode.BlobRef]time.Duration{}
		starts := map[syncnode.BlobRef]int{}
		finishing, maxFinishing := 0, 0
		start := time.Now()
		fetch := func(ctx context.Context, ref syncnode.BlobRef, try *Try) error {
			mu.Lock()
			starts[ref]++
			mu.Unlock()
			time.Sleep(100 * time.Millisecond) // the bytes
			mu.Lock()
			bytesAt[ref] = time.Since(start)
			finishing++
			maxFinishing = max(maxFinishing, finishing)
			mu.Unlock()
			try.Release()
			try.Release()                // a second time changes nothing
			time.Sleep(10 * time.Second) // the shares, from a slow peer
			mu.Lock()
			finishing--
			mu.Unlock()
			return nil
		}
		cfg := Config{}
		cfg.Concurrency = places
		st := &MemAttempts{}
		f := newFetcher(t, cfg, fetch, st)
		f.Start(t.Context())
		defer f.Stop()
		for i := range blobs {
			if err := f.Enqueue(testRef(i)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second)
		synctest.Wait()
		mu.Lock()
		got, most := len(bytesAt), maxFinishing
		mu.Unlock()
		// 4 places, 16 finishing: 20 blobs have their bytes by 500 ms, and
		// the rest wait for finishing attempts to end.
		if got != 4*places+places {
			t.Fatalf("%d blobs had their bytes after 1 s, want %d (4 places and 16 finishing)", got, 4*places+places)
		}
		if most > 4*places+places {
			t.Fatalf("%d attempts finishing at once, want at most %d", most, 4*places+places)
		}
		for f.Len() > 0 {
			time.Sleep(time.Second)
		}
		synctest.Wait()
		for i := range blobs {
			ref := testRef(i)
			if a, _ := st.Attempt(ref); starts[ref] != 1 || a.Count != 1 {
				t.Fatalf("blob %d: started %d times, %d attempts recorded, want 1 and 1", i, starts[ref], a.Count)
			}
		}
	})
}

// A blob whose attempt finds its holder busy is tried again after about
// BusyDelay, its attempts not counted and its place given to the next
// blob at once: four busy blobs never hold back a fifth.
func TestBusyIsNotAnAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		busyLeft := map[syncnode.BlobRef]int{}
		var tries []time.Duration
		doneAt := map[syncnode.BlobRef]time.Duration{}
		start := time.Now()
		fetch := func(ctx context.Context, ref syncnode.BlobRef, try *Try) error {
			mu.Lock()
			defer mu.Unlock()
			if ref == testRef(0) {
				tries = append(tries, time.Since(start))
			}
			if busyLeft[ref] > 0 {
				busyLeft[ref]--
				return fmt.Errorf("%w: its holder serves enough", ErrBusy)
			}
			doneAt[ref] = time.Since(start)
			return nil
		}
		for i := range 4 {
			busyLeft[testRef(i)] = 3
		}
		cfg := Config{}
		cfg.Concurrency = 1
		st := &MemAttempts{}
		f := newFetcher(t, cfg, fetch, st)
		f.Start(t.Context())
		defer f.Stop()
		for i := range 5 {
			if err := f.Enqueue(testRef(i)); err != nil {
				t.Fatal(err)
			}
		}
		for f.Len() > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if doneAt[testRef(4)] > 10*time.Millisecond {
			t.Fatalf("the fifth blob waited %v behind four busy ones", doneAt[testRef(4)])
		}
		for i := range 5 {
			if a, _ := st.Attempt(testRef(i)); a.Count != 1 {
				t.Fatalf("blob %d: %d attempts recorded, want 1 (busy tries are not attempts)", i, a.Count)
			}
		}
		if len(tries) != 4 {
			t.Fatalf("blob 0 tried %d times, want 4", len(tries))
		}
		for k := 1; k < len(tries); k++ {
			if gap := tries[k] - tries[k-1]; gap < BusyDelay || gap > 2*BusyDelay {
				t.Fatalf("busy retry %d after %v, want BusyDelay to twice that", k, gap)
			}
		}
	})
}
