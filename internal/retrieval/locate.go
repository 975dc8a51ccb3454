package retrieval

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/blobproto"
	"github.com/syncnode/syncnode/internal/connectivity"
)

// haveGrace is the least time locate waits for more holders' answers after
// the first holder in good standing (not banned, not demoted) has answered.
const haveGrace = 20 * time.Millisecond

// maxAsk bounds the peers asked whether they hold a blob in one locate.
const maxAsk = 16

// locateHedge is how long the peers a signpost names have to answer
// before the group's members are asked too: a signpost can name a peer
// that is gone, whose dial only fails at its timeout, while a member that
// holds the blob answers within a round trip.
const locateHedge = time.Second

// locating is the state of one locate: the peers asked (never again), the
// holders found and the errors met.
type locating struct {
	r       *Retriever
	ref     syncnode.BlobRef
	asked   map[peer.ID]bool
	holders []peer.ID
	errs    []error
}

// locate returns the peers that say they hold ref, never one of exclude:
// hints first, then the signpost's locations (and the locations the asked
// peers' signposts name), then the members of the blob's groups, then the
// DHT's providers. A peer that cannot be reached is never taken for a
// holder. The silent peers, connected but found not answering, are asked
// again, yet do not count as a connected candidate that would answer
// before the members need asking.
func (r *Retriever) locate(ctx context.Context, ref syncnode.BlobRef, hints, exclude, silent []peer.ID) ([]peer.ID, error) {
	l := &locating{r: r, ref: ref, asked: map[peer.ID]bool{r.h.ID(): true}}
	for _, p := range exclude {
		l.asked[p] = true
	}
	sp, err := r.dir.Signpost(ref)
	if err != nil && !errors.Is(err, syncnode.ErrNotFound) {
		return nil, err
	}
	cands := slices.Clone(hints)
	for _, loc := range sp.Ranked() {
		connectivity.AddAddrs(r.h, loc.Peer, sp.Locations[loc.Peer].Addrs)
		cands = append(cands, loc.Peer)
	}
	if !slices.ContainsFunc(cands, func(p peer.ID) bool { return r.connected(p) && !slices.Contains(silent, p) }) {
		// None of them is connected: each must be dialled, and the
		// members would be asked next anyway.
		cands = append(cands, r.dir.MembersOf(sp.Groups())...)
	}
	for round := 0; round < 3 && len(cands) > 0 && len(l.holders) == 0; round++ {
		cands = l.ask(ctx, cands, locateHedge)
	}
	// Then the members of the blob's groups: private groups' blobs are not
	// in the DHT, and a member may hold a copy no signpost here names.
	if !l.good() {
		l.ask(ctx, r.dir.MembersOf(sp.Groups()), 0)
	}
	// The DHT is asked when the signposts led to no holder in good
	// standing (hostile holders must not hide honest ones), and only for
	// a blob that may be announced there: a lookup tells the ref to
	// strangers as surely as a provider record would.
	if !l.good() && r.dir.Public(sp.Groups()) {
		l.ask(ctx, l.providers(ctx), 0)
	}
	l.record()
	return l.result()
}

// good reports whether a holder in good standing was found.
func (l *locating) good() bool {
	_, good := l.r.rep.rank(l.holders, time.Now())
	return good
}

// ask asks the candidates not asked yet whether they hold the blob, at
// once, and returns the locations named by the signposts of those that do
// not. Once a holder in good standing has answered, the others get as
// long again as it took (at least haveGrace): a peer about as near is
// still heard, and one slow or absent peer does not hold up a fetch that
// can start. With a hedge, ask returns after that long whatever is still
// pending (the late answers are dropped).
func (l *locating) ask(ctx context.Context, cands []peer.ID, hedge time.Duration) (more []peer.ID) {
	type answer struct {
		p   peer.ID
		r   blobproto.HaveResult
		err error
	}
	var todo []peer.ID
	for _, p := range cands {
		if !l.asked[p] && len(l.asked) <= maxAsk {
			l.asked[p] = true
			todo = append(todo, p)
		}
	}
	answers := make(chan answer, len(todo))
	waiting := map[peer.ID]bool{}
	for _, p := range todo {
		waiting[p] = true
	}
	start := time.Now()
	for _, p := range todo {
		go func() {
			res, err := l.r.Have(ctx, p, l.ref)
			answers <- answer{p, res, err}
		}()
	}
	var grace, hedged <-chan time.Time
	if hedge > 0 {
		t := time.NewTimer(hedge)
		defer t.Stop()
		hedged = t.C
	}
	for len(waiting) > 0 {
		var a answer
		select {
		case a = <-answers:
		case <-grace:
			return more
		case <-hedged:
			if grace == nil {
				for p := range waiting {
					l.errs = append(l.errs, fmt.Errorf("%s: no answer within %v", p, hedge))
				}
				return more
			}
			hedged = nil // a holder answered: the grace decides
			continue
		}
		delete(waiting, a.p)
		if grace == nil && a.err == nil && a.r.Have && l.r.InGoodStanding(a.p) {
			t := time.NewTimer(max(haveGrace, time.Since(start)))
			defer t.Stop()
			grace = t.C
		}
		switch {
		case a.err != nil:
			l.errs = append(l.errs, a.err)
		case a.r.Have:
			l.holders = append(l.holders, a.p)
		default:
			sp := a.r.Signpost
			l.r.dir.Learn(a.p, l.ref, &sp)
			for _, loc := range sp.Ranked() {
				more = append(more, loc.Peer)
			}
		}
	}
	return more
}

// providers returns the DHT's providers of the blob, their addresses
// learnt.
func (l *locating) providers(ctx context.Context) []peer.ID {
	fctx, cancel := context.WithTimeout(ctx, l.r.cfg.IOTimeout)
	defer cancel()
	provs, err := l.r.dht.FindProviders(fctx, l.ref, 8)
	if err != nil {
		l.errs = append(l.errs, err)
	}
	var ids []peer.ID
	for _, ai := range provs {
		l.r.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.AddressTTL)
		ids = append(ids, ai.ID)
	}
	return ids
}

// record writes the peers asked and the holders found into the blob's
// flight, for its journal.
func (l *locating) record() {
	f := l.r.flightOf(l.ref)
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for p := range l.asked {
		if p != l.r.h.ID() {
			f.tried = append(f.tried, p)
		}
	}
	f.holders = l.holders
}

// result returns the holders not banned, best first, or why there are
// none.
func (l *locating) result() ([]peer.ID, error) {
	holders := l.holders
	if found := len(holders); found > 0 {
		if holders, _ = l.r.rep.rank(holders, time.Now()); len(holders) == 0 {
			l.errs = append(l.errs, fmt.Errorf("retrieval: all %d holders found are banned for sending bytes that did not verify", found))
		}
	}
	if len(holders) == 0 {
		err := fmt.Errorf("%w: %s (asked %d peers)", blobproto.ErrNoHolder, l.ref, len(l.asked)-1)
		if len(l.errs) > 0 {
			err = fmt.Errorf("%w: %w", err, errors.Join(l.errs...))
		}
		return nil, err
	}
	return holders, nil
}
