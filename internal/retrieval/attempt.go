package retrieval

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/blobproto"
)

// wholePatience is how long the likely holder, asked for a blob whole,
// has to start answering before the holders are located.
const wholePatience = time.Second

// errSilent reports a likely holder that sent nothing within wholePatience.
var errSilent = errors.New("retrieval: no answer within " + wholePatience.String() + " to the ask for the whole blob")

// attempt makes one try of f: it takes a fetch slot, asks the likely
// holder, else locates the holders and fetches from them.
func (r *Retriever) attempt(ctx context.Context, f *flight, ref syncnode.BlobRef, urgency int, hints []peer.ID) (blobproto.FetchResult, []peer.ID, error) {
	// The server fetcher's attempt needs a place with its likely holder
	// before it takes a fetch slot: one member whose blobs come slowly (or
	// never quite stall) holds half the slots at most, and the others'
	// blobs go on beside it. Without one the attempt does not start; the
	// fetcher tries it again soon, not counting it. A user's fetch, or
	// one that joined the fetcher's, waits in no such line.
	if _, byFetcher := f.urgency(); byFetcher {
		if p, ok := r.likelyHolder(ref, hints); ok {
			release, ok := r.perHolder.tryAcquire(p)
			if !ok {
				return blobproto.FetchResult{}, nil, fmt.Errorf("%w: %s serves %d background fetches here already", fetcher.ErrBusy, p, r.perHolder.per)
			}
			defer release()
		}
	}
	if err := r.gate.acquire(ctx, urgency); err != nil {
		return blobproto.FetchResult{}, nil, err
	}
	defer r.gate.release()
	// A likely holder is asked for the blob whole at once, with no round
	// of questions first: most blobs are small and come on one stream from
	// their writer or a server. A larger blob (its tree kept), or a
	// candidate that turns out not to hold it, leaves the rest to the
	// holders a locate finds.
	var tried, silent []peer.ID
	var firstErr error // why the likely holder did not serve, named if nobody else does
	if p, ok := r.likelyHolder(ref, hints); ok {
		f.set(Status{State: Locating})
		res, err := r.transfer(ctx, f, ref, []peer.ID{p}, true)
		switch {
		case err == nil:
			holders := []peer.ID{p}
			f.mu.Lock()
			f.tried, f.holders = holders, holders
			f.mu.Unlock()
			return res, holders, nil
		case ctx.Err() != nil:
			return res, nil, err
		case errors.Is(err, errSilent):
			// Gone without a word, or only slow: the locate asks it
			// again, and the members beside it at once.
			silent = append(silent, p)
			firstErr = err
		case !errors.Is(err, blobproto.ErrNotWhole):
			tried = append(tried, p) // not a holder after all, or a failed one
			firstErr = err
		}
	}
	// A holder may evict between saying it has the blob and serving it:
	// then the blob is located once more, without the holders tried, and
	// the fetch resumes from what arrived.
	for again := 0; ; again++ {
		f.set(Status{State: Locating})
		holders, err := r.locate(ctx, ref, hints, tried, silent)
		if err != nil {
			if firstErr != nil {
				err = fmt.Errorf("%w; asked first: %w", err, firstErr)
			}
			return blobproto.FetchResult{}, nil, err
		}
		f.set(Status{State: Fetching, Holders: holders})
		res, err := r.transfer(ctx, f, ref, holders, false)
		if err == nil {
			return res, holders, nil
		}
		// Only holders that were simply gone earn a second look; liars and
		// stalling holders are already judged, and another round of them
		// would hold a fetch slot for nothing.
		if again == 1 || ctx.Err() != nil || len(res.Rejected) > 0 || len(res.Faulty) > 0 {
			return res, holders, fmt.Errorf("retrieval: fetch %s from %d holders: %w", ref, len(holders), err)
		}
		tried = append(tried, holders...)
	}
}

// transfer fetches ref from holders into the blob store, reporting its
// progress on f, and judges the holders by how they served. This node is
// marked as getting the blob from a peer (not its origin) while the bytes
// arrive, durably before the blob can become visible. The commit holds
// the blob's lock, which accepting and granting shares take too: no share
// lands on the copy between its becoming visible and its directory entry
// reaching stable storage, where a power loss would leave the shares
// without the copy.
func (r *Retriever) transfer(ctx context.Context, f *flight, ref syncnode.BlobRef, holders []peer.ID, wholeOnly bool) (blobproto.FetchResult, error) {
	var heard atomic.Bool
	if wholeOnly {
		// A likely holder that sends nothing within wholePatience may
		// have vanished: its silent connection would hold the fetch for
		// a whole probe, while a locate asks every holder at once.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		t := time.AfterFunc(wholePatience, func() {
			if !heard.Load() {
				cancel(errSilent)
			}
		})
		defer t.Stop()
	}
	commit := r.keep.Receive(ref)
	res, err := r.client.FetchWith(ctx, ref, holders, blobproto.FetchOptions{
		Progress: func(p blobproto.Progress) {
			heard.Store(true)
			// A whole-blob ask is still locating until bytes come: a
			// larger blob goes on to a locate.
			if !wholeOnly || p.Received > 0 || p.Total == 0 {
				f.set(Status{State: Fetching, Received: p.Received, Total: p.Total, Holders: holders})
			}
		},
		Commit:    commit,
		WholeOnly: wholeOnly,
	})
	if err != nil && context.Cause(ctx) == errSilent {
		err = fmt.Errorf("%w: %s", errSilent, holders[0])
	}
	r.bytesIn.Add(res.FromNetwork)
	r.judge(ref, res, err == nil)
	if !errors.Is(err, blobproto.ErrNotWhole) && r.cfg.Route != nil {
		r.cfg.Route(ref, res, err)
	}
	return res, err
}

// likelyHolder returns the peer to ask first for ref with no question
// asked: the first hint, else the best-ranked location of its signpost
// that is connected, in good standing and not a mere proxy.
func (r *Retriever) likelyHolder(ref syncnode.BlobRef, hints []peer.ID) (peer.ID, bool) {
	usable := func(p peer.ID) bool {
		return p != r.h.ID() && r.InGoodStanding(p) && r.connected(p)
	}
	for _, p := range hints {
		if usable(p) {
			return p, true
		}
	}
	sp, err := r.dir.Signpost(ref)
	if err != nil {
		return "", false
	}
	for _, loc := range sp.Ranked() {
		if !loc.IsProxy && usable(loc.Peer) {
			return loc.Peer, true
		}
	}
	return "", false
}

// judge records how ref's holders behaved in a fetch: liars are banned
// and dropped from the signpost, holders that stalled, truncated or reset
// are demoted, and those that delivered a blob that completed are cleared.
func (r *Retriever) judge(ref syncnode.BlobRef, res blobproto.FetchResult, ok bool) {
	now := time.Now()
	for _, p := range res.Faulty {
		r.rep.faulted(p, now)
	}
	if len(res.Faulty) > 0 {
		r.log.Info("holders failed mid-transfer; demoted", "blob", ref, "peers", res.Faulty)
	}
	if ok {
		for p, b := range res.BytesBy {
			if b > 0 && !slices.Contains(res.Faulty, p) && !slices.Contains(res.Rejected, p) {
				r.rep.served(p)
				r.returns.servedBy(p)
			}
		}
	}
	if len(res.Rejected) == 0 {
		return
	}
	r.rejected.Add(int64(len(res.Rejected)))
	for _, p := range res.Rejected {
		r.rep.lied(p, now)
	}
	r.log.Warn("holders sent bytes that do not match the blob; banned", "blob", ref, "peers", res.Rejected)
	r.dir.Forget(ref, res.Rejected)
}
