package journal

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/kv"
)

var discard = slog.New(slog.DiscardHandler)

// fakeFetch takes 10 ms of the bubble's time per attempt, fails the first
// failFirst attempts of each blob, and records when each began.
type fakeFetch struct {
	failFirst int
	mu        sync.Mutex
	calls     map[syncnode.BlobRef]int
	at        map[syncnode.BlobRef][]time.Time
	done      int
}

func newFakeFetch(failFirst int) *fakeFetch {
	return &fakeFetch{failFirst: failFirst, calls: map[syncnode.BlobRef]int{}, at: map[syncnode.BlobRef][]time.Time{}}
}

func (f *fakeFetch) fetch(ctx context.Context, ref syncnode.BlobRef, try *fetcher.Try) error {
	f.mu.Lock()
	f.calls[ref]++
	call := f.calls[ref]
	f.at[ref] = append(f.at[ref], time.Now())
	f.mu.Unlock()
	try.Tried = []string{"holder"}
	select {
	case <-time.After(10 * time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	if call <= f.failFirst {
		return fmt.Errorf("injected failure %d", call)
	}
	f.mu.Lock()
	f.done++
	f.mu.Unlock()
	return nil
}

func (f *fakeFetch) doneCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.done
}

func newFetcher(t *testing.T, cfg fetcher.Config, fetch fetcher.FetchFunc, st fetcher.AttemptStore) *fetcher.Fetcher {
	t.Helper()
	f, err := fetcher.New(cfg, fetch, st, rand.New(rand.NewPCG(5, 5)), discard)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func testRef(i int) syncnode.BlobRef { return syncnode.RefFromHash([32]byte{byte(i), 1}) }

// TestFetchAttemptsSurviveRestart fails a blob's fetches three times,
// the record kept in the journal on badger; after the database is closed
// and reopened, a new fetcher waits the backoff of three attempts before
// trying again, and the record says what the last attempt found.
func TestFetchAttemptsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	ref := testRef(1)
	cfg := fetcher.Config{}
	open := func(t *testing.T) *Journal {
		db, err := kv.Open(dir, discard)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return New(db, nil, discard)
	}
	// Badger runs inside each bubble: its goroutines then share the fake
	// clock, and closing it ends them before the bubble does.
	synctest.Test(t, func(t *testing.T) {
		ff := newFakeFetch(1000)
		f := newFetcher(t, cfg, ff.fetch, open(t))
		f.Start(t.Context())
		if err := f.Enqueue(ref); err != nil {
			t.Fatal(err)
		}
		for f.Status(ref).Attempts < 3 {
			time.Sleep(100 * time.Millisecond)
		}
		f.Stop()
	})
	synctest.Test(t, func(t *testing.T) {
		st := open(t)
		a, err := st.Attempt(ref)
		if err != nil || a.Count != 3 || a.Done || a.Err == "" || len(a.Tried) != 1 {
			t.Fatalf("stored attempt after reopen = %+v, %v; want 3, failed, one peer tried", a, err)
		}
		ff := newFakeFetch(0)
		f := newFetcher(t, cfg, ff.fetch, st)
		f.Start(t.Context())
		defer f.Stop()
		start := time.Now()
		if err := f.Enqueue(ref); err != nil {
			t.Fatal(err)
		}
		for ff.doneCount() < 1 {
			time.Sleep(100 * time.Millisecond)
		}
		delay := ff.at[ref][0].Sub(start)
		lo, hi := cfg.Backoff(3, 0), cfg.Backoff(3, 1)
		t.Logf("first attempt after restart came %v after enqueue (backoff of 3: %v..%v)", delay, lo, hi)
		if delay < lo || delay >= hi {
			t.Fatalf("delay %v outside the backoff of 3 attempts [%v, %v)", delay, lo, hi)
		}
		for f.Len() > 0 {
			time.Sleep(10 * time.Millisecond)
		}
		if a, _ := st.Attempt(ref); a.Count != 4 || !a.Done || a.Err != "" {
			t.Fatalf("attempt after success = %+v, want 4 and done", a)
		}
	})
}

// TestLegacyAttemptsTakenOver: a blob whose attempt count an older
// version kept in its signpost backs off as far as that count says until
// the journal records an attempt of its own.
func TestLegacyAttemptsTakenOver(t *testing.T) {
	db, err := kv.Open(t.TempDir(), discard)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ref := testRef(7)
	j := New(db, func(r syncnode.BlobRef) (int, error) {
		if r == ref {
			return 5, nil
		}
		return 0, nil
	}, discard)
	if a, err := j.Attempt(ref); err != nil || a.Count != 5 {
		t.Fatalf("attempt before any of the journal's own: %+v, %v; want the legacy 5", a, err)
	}
	j.NoteHandoff(ref, "handed off", time.Unix(100, 0))
	if a, _ := j.Attempt(ref); a.Count != 5 {
		t.Fatalf("a note hid the legacy count: %+v", a)
	}
	if err := j.SetAttempt(ref, fetcher.Attempt{Count: 6, Err: "no holder"}); err != nil {
		t.Fatal(err)
	}
	e, ok := j.Read(ref)
	if !ok || e.Count != 6 || e.Err != "no holder" || e.Handoff != "handed off" {
		t.Fatalf("journal after an attempt: %+v %v; want 6, its error, and the note kept", e, ok)
	}
}
