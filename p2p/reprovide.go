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
// a blob added is provided at once (new ones are batched), every blob the
// node's Held lists is provided again each interval, and a blob Held no
// longer provides is not provided again. It keeps no set of its own: the
// node knows what it holds.
type Reprovider struct {
	provide  func(context.Context, syncnode.BlobRef) error
	held     Held
	interval time.Duration
	workers  int
	log      *slog.Logger

	mu      sync.Mutex
	pending map[syncnode.BlobRef]struct{}
	kick    chan struct{}
}

// Held is what a reprovider asks of its node.
type Held interface {
	// Provided lists the blobs to provide again, each interval.
	Provided() []syncnode.BlobRef
	// Provides reports whether ref is still to be provided.
	Provides(ref syncnode.BlobRef) bool
}

// NewReprovider returns a reprovider that announces through provide (a
// DHT's Provide) with workers at once the blobs held lists.
func NewReprovider(provide func(context.Context, syncnode.BlobRef) error, held Held, interval time.Duration, workers int, log *slog.Logger) *Reprovider {
	return &Reprovider{provide: provide, held: held, interval: interval, workers: workers, log: log,
		pending: map[syncnode.BlobRef]struct{}{}, kick: make(chan struct{}, 1)}
}

// Add provides ref soon.
func (r *Reprovider) Add(ref syncnode.BlobRef) {
	r.mu.Lock()
	r.pending[ref] = struct{}{}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Remove stops a pending provide of ref; Held no longer lists it.
func (r *Reprovider) Remove(ref syncnode.BlobRef) {
	r.mu.Lock()
	delete(r.pending, ref)
	r.mu.Unlock()
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
	refs := make([]syncnode.BlobRef, 0, len(r.pending))
	for ref := range r.pending {
		refs = append(refs, ref)
	}
	clear(r.pending)
	r.mu.Unlock()
	if !pendingOnly {
		refs = r.held.Provided()
	}

	work := make(chan syncnode.BlobRef)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range r.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ref := range work {
				if !r.held.Provides(ref) {
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
