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
//
// While the DHT knows no peer (a device offline, a node alone), a provide
// could only fail: the reprovider provides nothing then, and once the DHT
// knows a peer again it provides every held blob, those added meanwhile
// among them, rather than leaving them unfindable until the next
// interval.
type Reprovider struct {
	provide  func(context.Context, syncnode.BlobRef) error
	ready    func() bool
	held     Held
	interval time.Duration
	workers  int
	log      *slog.Logger

	mu      sync.Mutex
	pending map[syncnode.BlobRef]struct{}
	kick    chan struct{}
	// missed reports blobs not provided while the DHT knew no peer.
	missed bool
}

// ReadyPoll is how often a reprovider that skipped provides while the DHT
// knew no peer looks whether it knows one now.
const ReadyPoll = 5 * time.Second

// Held is what a reprovider asks of its node.
type Held interface {
	// Provided lists the blobs to provide again, each interval.
	Provided() []syncnode.BlobRef
	// Provides reports whether ref is still to be provided.
	Provides(ref syncnode.BlobRef) bool
}

// NewReprovider returns a reprovider that announces through provide (a
// DHT's Provide) with workers at once the blobs held lists, when ready
// reports that the DHT knows a peer (nil: always).
func NewReprovider(provide func(context.Context, syncnode.BlobRef) error, ready func() bool, held Held, interval time.Duration, workers int, log *slog.Logger) *Reprovider {
	if ready == nil {
		ready = func() bool { return true }
	}
	return &Reprovider{provide: provide, ready: ready, held: held, interval: interval, workers: workers, log: log,
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
	var poll <-chan time.Time // while blobs wait for a peer
	for {
		full := false
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-t.C:
			full = true
			t = time.NewTimer(r.interval)
		case <-poll:
			r.mu.Lock()
			if full = r.missed && r.ready(); full {
				r.missed = false
			}
			r.mu.Unlock()
			poll = nil
		}
		start := time.Now()
		n, failed := r.round(ctx, !full)
		if full {
			r.log.Info("reprovided blobs", "count", n, "failed", failed, "took", time.Now().Sub(start))
		}
		r.mu.Lock()
		if r.missed && poll == nil {
			poll = time.After(ReadyPoll)
		}
		r.mu.Unlock()
	}
}

// round provides the pending blobs, or all held ones; none while the DHT
// knows no peer, which it marks missed.
func (r *Reprovider) round(ctx context.Context, pendingOnly bool) (provided, failed int) {
	r.mu.Lock()
	if !r.ready() {
		r.missed = r.missed || len(r.pending) > 0 || !pendingOnly
		clear(r.pending)
		r.mu.Unlock()
		return 0, 0
	}
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
