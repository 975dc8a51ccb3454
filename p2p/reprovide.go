package p2p

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/syncnode/syncnode"
)

// RecordTTL is how long a provider record lives in syncnode's DHT. A blob
// that is evicted stops being re-provided, so its records are gone within
// RecordTTL; ReprovideInterval renews the rest well before then.
const (
	RecordTTL         = 6 * time.Hour
	ReprovideInterval = 2 * time.Hour
)

// Reprovider keeps the DHT's provider records for the blobs a node holds:
// a blob added is provided at once (new ones are batched), every blob held
// is provided again each interval, and a removed blob is never provided
// again.
type Reprovider struct {
	provide  func(context.Context, syncnode.BlobRef) error
	interval time.Duration
	workers  int
	log      *slog.Logger

	mu      sync.Mutex
	held    map[syncnode.BlobRef]struct{}
	pending map[syncnode.BlobRef]struct{}
	kick    chan struct{}
}

// NewReprovider returns a reprovider that announces through provide (a
// DHT's Provide) with workers at once.
func NewReprovider(provide func(context.Context, syncnode.BlobRef) error, interval time.Duration, workers int, log *slog.Logger) *Reprovider {
	return &Reprovider{provide: provide, interval: interval, workers: workers, log: log,
		held: map[syncnode.BlobRef]struct{}{}, pending: map[syncnode.BlobRef]struct{}{}, kick: make(chan struct{}, 1)}
}

// Add records that the node holds ref and provides it soon.
func (r *Reprovider) Add(ref syncnode.BlobRef) {
	r.mu.Lock()
	r.held[ref] = struct{}{}
	r.pending[ref] = struct{}{}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Remove stops providing ref.
func (r *Reprovider) Remove(ref syncnode.BlobRef) {
	r.mu.Lock()
	delete(r.held, ref)
	delete(r.pending, ref)
	r.mu.Unlock()
}

// Len returns how many blobs are being provided.
func (r *Reprovider) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}

// Run provides new blobs as they are added and all of them every interval,
// until ctx is done.
func (r *Reprovider) Run(ctx context.Context) {
	t := time.NewTimer(r.interval)
	defer func() { t.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			r.round(ctx, true)
		case <-t.C:
			start := time.Now()
			n, failed := r.round(ctx, false)
			r.log.Info("reprovided blobs", "count", n, "failed", failed, "took", time.Now().Sub(start))
			t = time.NewTimer(r.interval)
		}
	}
}

// round provides the pending blobs, or all held ones.
func (r *Reprovider) round(ctx context.Context, pendingOnly bool) (provided, failed int) {
	r.mu.Lock()
	src := r.held
	if pendingOnly {
		src = r.pending
	}
	refs := make([]syncnode.BlobRef, 0, len(src))
	for ref := range src {
		refs = append(refs, ref)
	}
	clear(r.pending)
	r.mu.Unlock()

	work := make(chan syncnode.BlobRef)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range r.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ref := range work {
				r.mu.Lock()
				_, still := r.held[ref]
				r.mu.Unlock()
				if !still {
					continue // removed meanwhile
				}
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := r.provide(cctx, ref)
				cancel()
				mu.Lock()
				if err != nil {
					failed++
					r.log.Debug("provide failed", "blob", ref, "err", err)
				} else {
					provided++
				}
				mu.Unlock()
			}
		}()
	}
	for _, ref := range refs {
		select {
		case work <- ref:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	return provided, failed
}
