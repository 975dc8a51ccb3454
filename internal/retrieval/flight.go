package retrieval

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/connectivity"
)

// flights dedupes concurrent fetches of one blob.
type flights struct {
	mu sync.Mutex
	m  map[syncnode.BlobRef]*flight
}

// flight is one blob's fetch, shared by every caller asking for it.
type flight struct {
	done   chan struct{}
	info   blobstore.Info
	err    error
	cancel context.CancelFunc

	mu       sync.Mutex
	status   Status
	tried    []peer.ID
	holders  []peer.ID
	watchers map[int]func(Status)
	nextID   int
	waiters  int
	// wait is the longest WaitForHolder of the callers so far, maxUrgency the
	// highest urgency.
	wait       time.Duration
	maxUrgency int
	// byFetcher: every caller so far is the server fetcher, whose
	// attempts wait for a place with the likely holder (fetcher.ErrBusy).
	byFetcher bool
}

// urgency returns the highest urgency of f's callers so far, and
// whether they are all the server fetcher.
func (f *flight) urgency() (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxUrgency, f.byFetcher
}

func (f *flight) set(s Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = s
	for _, w := range f.watchers {
		w(s)
	}
}

// Fetch fetches ref from the peers that hold it, verifying every byte,
// unless it is held already. It joins (or starts) the flight of ref and
// waits for it; a caller whose ctx ends leaves it, and the last to leave
// cancels it.
func (r *Retriever) Fetch(ctx context.Context, ref syncnode.BlobRef, req Request) (Result, error) {
	ctx, done, err := r.work.Enter(ctx)
	if err != nil {
		return Result{}, ErrClosed
	}
	defer done()
	urgency, hints, status, wait := req.Urgency, req.Hints, req.Status, req.WaitForHolder
	if info, err := r.store.Stat(ref); err == nil {
		if status != nil {
			status(Status{State: Done, Received: info.Size, Total: info.Size})
		}
		return Result{Info: info}, nil
	}
	r.flights.mu.Lock()
	f := r.flights.m[ref]
	var start func()
	if f == nil {
		// Status starts at Pending; the flight runs once its first
		// watcher is in place, so every watcher sees every stage.
		f = &flight{done: make(chan struct{}), watchers: map[int]func(Status){}, maxUrgency: urgency, byFetcher: req.Background}
		fctx, cancel := context.WithCancel(r.ctx)
		f.cancel = cancel
		r.flights.m[ref] = f
		start = func() {
			if !r.work.Go(func() { r.runFlight(fctx, f, ref, hints) }) {
				f.err = ErrClosed
				r.land(f, ref)
			}
		}
	}
	f.waiters++
	f.mu.Lock()
	f.wait = max(f.wait, wait)
	f.maxUrgency = max(f.maxUrgency, urgency)
	f.byFetcher = f.byFetcher && req.Background
	id := f.nextID
	f.nextID++
	if status != nil {
		f.watchers[id] = status
		status(f.status)
	}
	f.mu.Unlock()
	r.flights.mu.Unlock()
	if start != nil {
		start()
	}

	leave := func() {
		f.mu.Lock()
		delete(f.watchers, id)
		f.mu.Unlock()
		r.flights.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
		}
		r.flights.mu.Unlock()
	}
	select {
	case <-f.done:
		leave()
		f.mu.Lock()
		defer f.mu.Unlock()
		return Result{Info: f.info, Tried: f.tried, Holders: f.holders}, f.err
	case <-ctx.Done():
		leave()
		return Result{}, ctx.Err()
	}
}

func (r *Retriever) flightOf(ref syncnode.BlobRef) *flight {
	r.flights.mu.Lock()
	defer r.flights.mu.Unlock()
	return r.flights.m[ref]
}

// land ends f: it is no longer ref's flight, and its callers return.
func (r *Retriever) land(f *flight, ref syncnode.BlobRef) {
	r.flights.mu.Lock()
	delete(r.flights.m, ref)
	r.flights.mu.Unlock()
	f.cancel()
	close(f.done)
}

func (r *Retriever) runFlight(ctx context.Context, f *flight, ref syncnode.BlobRef, hints []peer.ID) {
	defer r.land(f, ref)
	start := time.Now()
	for tries := 0; ; tries++ {
		urgency, _ := f.urgency()
		res, holders, err := r.attempt(ctx, f, ref, urgency, hints)
		if _, byFetcher := f.urgency(); errors.Is(err, fetcher.ErrBusy) && !byFetcher {
			continue // another caller joined the fetcher's: it waits for no holder's place
		}
		if err == nil {
			r.keep.Fetched(ref, res.Size)
			f.info = res.Info
			f.set(Status{State: Done, Received: res.Size, Total: res.Size, Holders: holders})
			return
		}
		f.mu.Lock()
		wait := f.wait
		f.mu.Unlock()
		until := start.Add(wait)
		if ctx.Err() != nil || len(res.Rejected) > 0 || !time.Now().Before(until) {
			if wait > 0 && ctx.Err() == nil {
				err = fmt.Errorf("retrieval: no holder of %s could serve it within %v (%d tries): %w", ref, wait, tries+1, err)
			}
			f.err = err
			f.set(Status{State: Failed, Err: err})
			return
		}
		r.log.Info("no holder could serve the blob; waiting for one to come back", "blob", ref, "until", until, "err", err)
		f.set(Status{State: Waiting, Err: err, Until: until})
		r.awaitHolder(ctx, until, tries)
		// This fetch paces its own tries: libp2p's dial backoff would
		// refuse to dial a holder that failed a moment ago and is back.
		f.mu.Lock()
		tried := slices.Clone(f.tried)
		f.mu.Unlock()
		connectivity.ClearDialBackoff(r.h, tried)
	}
}

// awaitHolder waits until a peer connects (a holder may be back; then
// retrySpacing more), the next periodic try (1 s after the first failure,
// doubling to 8 s), until, or the end of ctx.
func (r *Retriever) awaitHolder(ctx context.Context, until time.Time, tries int) {
	back := r.arrivals.wait()
	t := time.NewTimer(min(time.Second<<min(tries, 3), time.Until(until)))
	defer t.Stop()
	select {
	case <-back:
		// Peers that connect one after another start one try in each
		// retrySpacing, not one each.
		select {
		case <-time.After(retrySpacing):
		case <-t.C:
		case <-ctx.Done():
		}
	case <-t.C:
	case <-ctx.Done():
	}
}

// retrySpacing is the least time between two tries of a waiting fetch
// that a peer's connection starts.
const retrySpacing = 250 * time.Millisecond
