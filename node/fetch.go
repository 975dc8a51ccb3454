package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/blobproto"
	"github.com/syncnode/syncnode/signpost"
)

// State is a stage of a blob fetch.
type State int

// The stages of a fetch; Failed ends a fetch that did not finish. A fetch
// goes Pending, Locating, Fetching, Done; one whose holders could not be
// reached may go Waiting (for one of them to come back) and Locating
// again, for as long as its caller allows.
const (
	Pending State = iota
	Locating
	Fetching
	Done
	Failed
	Waiting
)

func (s State) String() string {
	return [...]string{"pending", "locating", "fetching", "done", "failed", "waiting"}[s]
}

// Status is a fetch's progress: its stage and, while fetching and when
// done, the bytes held verified of the blob's size.
type Status struct {
	State           State
	Received, Total int64
	// Holders are the peers found holding the blob (from Fetching on).
	Holders []peer.ID
	// Err is why a fetch failed, or, while Waiting, why the last try did.
	Err error
	// Until is when a Waiting fetch gives up.
	Until time.Time
}

// Fetch priorities: a waiting fetch with a higher priority starts first.
const (
	PriorityBackground = 0 // the server fetcher's
	PriorityNormal     = 1
	PriorityHigh       = 2
)

// FetchOptions modify FetchBlob.
type FetchOptions struct {
	// Priority orders this fetch among those waiting to start.
	Priority int
	// Status, if not nil, is called with every change of the fetch's
	// status, one call at a time, ending with Done or Failed.
	Status func(Status)
	// WaitForHolder is how long a fetch whose holders could not be
	// reached (gone, restarting, unreachable; not lying) waits for one to
	// come back: it is Waiting, and tries again whenever a peer connects
	// and every few seconds. Zero fails at once.
	WaitForHolder time.Duration
}

// ErrNoHolder reports a blob that no reachable peer holds.
var ErrNoHolder = blobproto.ErrNoHolder

// FetchBlob fetches ref from the peers that hold it, located through its
// signpost and then the DHT, verifying every byte, and takes the ownership
// shares the holders offer. Concurrent fetches of one blob share one
// transfer. A blob already held is Done at once.
func (n *Node) FetchBlob(ctx context.Context, ref syncnode.BlobRef, opts FetchOptions) (blobstore.Info, error) {
	ctx, done, err := n.call(ctx)
	if err != nil {
		return blobstore.Info{}, err
	}
	defer done()
	tr := &attemptTrace{}
	info, err := n.fetch(withTrace(ctx, tr), ref, opts.Priority, nil, opts.Status, opts.WaitForHolder)
	if err != nil {
		return info, err
	}
	if err := n.takeShares(ctx, ref, tr.holders, false); err != nil {
		n.log.Info("fetched, but shares not all taken", "blob", ref, "err", err)
	}
	return info, nil
}

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
	// wait is the longest WaitForHolder of the callers so far, prio the
	// highest priority.
	wait time.Duration
	prio int
	// byFetcher: every caller so far is the server fetcher, whose
	// attempts wait for a place with the likely holder (fetcher.ErrBusy).
	byFetcher bool
}

// priority returns the highest priority of f's callers so far, and
// whether they are all the server fetcher.
func (f *flight) priority() (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.prio, f.byFetcher
}

func (f *flight) set(s Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = s
	for _, w := range f.watchers {
		w(s)
	}
}

// fetch joins (or starts) the flight of ref and waits for it; a caller
// whose ctx ends leaves it, and the last to leave cancels it. hints are
// peers to ask first; wait is how long the caller lets the flight wait for
// an unreachable holder to come back.
func (n *Node) fetch(ctx context.Context, ref syncnode.BlobRef, prio int, hints []peer.ID, status func(Status), wait time.Duration) (blobstore.Info, error) {
	if info, err := n.blobs.Stat(ref); err == nil {
		if status != nil {
			status(Status{State: Done, Received: info.Size, Total: info.Size})
		}
		return info, nil
	}
	n.flights.mu.Lock()
	f := n.flights.m[ref]
	var start func()
	if f == nil {
		// Status starts at Pending; the flight runs once its first
		// watcher is in place, so every watcher sees every stage.
		f = &flight{done: make(chan struct{}), watchers: map[int]func(Status){}, prio: prio, byFetcher: fetcher.InAttempt(ctx)}
		fctx, cancel := context.WithCancel(n.ctx)
		f.cancel = cancel
		n.flights.m[ref] = f
		start = func() { n.goRun(func() { n.runFlight(fctx, f, ref, hints) }) }
	}
	f.waiters++
	f.mu.Lock()
	f.wait = max(f.wait, wait)
	f.prio = max(f.prio, prio)
	f.byFetcher = f.byFetcher && fetcher.InAttempt(ctx)
	id := f.nextID
	f.nextID++
	if status != nil {
		f.watchers[id] = status
		status(f.status)
	}
	f.mu.Unlock()
	n.flights.mu.Unlock()
	if start != nil {
		start()
	}

	leave := func() {
		f.mu.Lock()
		delete(f.watchers, id)
		f.mu.Unlock()
		n.flights.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			f.cancel()
		}
		n.flights.mu.Unlock()
	}
	select {
	case <-f.done:
		leave()
		if tr, ok := ctx.Value(traceKey{}).(*attemptTrace); ok {
			f.mu.Lock()
			tr.tried, tr.holders = f.tried, f.holders
			f.mu.Unlock()
		}
		return f.info, f.err
	case <-ctx.Done():
		leave()
		return blobstore.Info{}, ctx.Err()
	}
}

func (n *Node) flightOf(ref syncnode.BlobRef) *flight {
	n.flights.mu.Lock()
	defer n.flights.mu.Unlock()
	return n.flights.m[ref]
}

func (n *Node) runFlight(ctx context.Context, f *flight, ref syncnode.BlobRef, hints []peer.ID) {
	defer func() {
		n.flights.mu.Lock()
		delete(n.flights.m, ref)
		n.flights.mu.Unlock()
		f.cancel()
		close(f.done)
	}()
	start := time.Now()
	for tries := 0; ; tries++ {
		prio, _ := f.priority()
		res, holders, err := n.attempt(ctx, f, ref, prio, hints)
		if _, byFetcher := f.priority(); errors.Is(err, fetcher.ErrBusy) && !byFetcher {
			continue // another caller joined the fetcher's: it waits for no holder's place
		}
		if err == nil {
			n.fetched(ref, res.Size)
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
				err = fmt.Errorf("node: no holder of %s could serve it within %v (%d tries): %w", ref, wait, tries+1, err)
			}
			f.err = err
			f.set(Status{State: Failed, Err: err})
			return
		}
		n.log.Info("no holder could serve the blob; waiting for one to come back", "blob", ref, "until", until, "err", err)
		f.set(Status{State: Waiting, Err: err, Until: until})
		n.awaitHolder(ctx, until, tries)
		// This fetch paces its own tries: libp2p's dial backoff would
		// refuse to dial a holder that failed a moment ago and is back.
		f.mu.Lock()
		tried := slices.Clone(f.tried)
		f.mu.Unlock()
		n.clearDialBackoff(tried)
	}
}

// clearDialBackoff lets the host dial peers at once again, whatever their
// recent failures.
func (n *Node) clearDialBackoff(peers []peer.ID) {
	sw, ok := n.h.Network().(*swarm.Swarm)
	if !ok {
		return
	}
	for _, p := range peers {
		sw.Backoff().Clear(p)
	}
}

// awaitHolder waits until a peer connects (a holder may be back; then
// retrySpacing more), the next periodic try (1 s after the first failure,
// doubling to 8 s), until, or the end of ctx.
func (n *Node) awaitHolder(ctx context.Context, until time.Time, tries int) {
	back := n.arrivals.wait()
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

// attempt makes one try of f: it takes a fetch slot, asks the likely
// holder, else locates the holders and fetches from them.
func (n *Node) attempt(ctx context.Context, f *flight, ref syncnode.BlobRef, prio int, hints []peer.ID) (blobproto.FetchResult, []peer.ID, error) {
	// The server fetcher's attempt needs a place with its likely holder
	// before it takes a fetch slot: one member whose blobs come slowly (or
	// never quite stall) holds half the slots at most, and the others'
	// blobs go on beside it. Without one the attempt does not start; the
	// fetcher tries it again soon, not counting it. A user's fetch, or
	// one that joined the fetcher's, waits in no such line.
	if _, byFetcher := f.priority(); byFetcher {
		if p, ok := n.likelyHolder(ref, hints); ok {
			release, ok := n.perHolder.tryAcquire(p)
			if !ok {
				return blobproto.FetchResult{}, nil, fmt.Errorf("%w: %s serves %d background fetches here already", fetcher.ErrBusy, p, n.perHolder.per)
			}
			defer release()
		}
	}
	if err := n.gate.acquire(ctx, prio); err != nil {
		return blobproto.FetchResult{}, nil, err
	}
	defer n.gate.release()
	// A likely holder is asked for the blob whole at once, with no round
	// of questions first: most blobs are small and come on one stream from
	// their writer or a server. A larger blob (its tree kept), or a
	// candidate that turns out not to hold it, leaves the rest to the
	// holders a locate finds.
	var tried []peer.ID
	if p, ok := n.likelyHolder(ref, hints); ok {
		f.set(Status{State: Locating})
		res, err := n.transfer(ctx, f, ref, []peer.ID{p}, true)
		switch {
		case err == nil:
			holders := []peer.ID{p}
			f.mu.Lock()
			f.tried, f.holders = holders, holders
			f.mu.Unlock()
			return res, holders, nil
		case ctx.Err() != nil:
			return res, nil, err
		case !errors.Is(err, blobproto.ErrNotWhole):
			tried = append(tried, p) // not a holder after all, or a failed one
		}
	}
	// A holder may evict between saying it has the blob and serving it:
	// then the blob is located once more, without the holders tried, and
	// the fetch resumes from what arrived.
	for again := 0; ; again++ {
		f.set(Status{State: Locating})
		holders, err := n.locate(ctx, ref, hints, tried)
		if err != nil {
			return blobproto.FetchResult{}, nil, err
		}
		f.set(Status{State: Fetching, Holders: holders})
		res, err := n.transfer(ctx, f, ref, holders, false)
		if err == nil {
			return res, holders, nil
		}
		// Only holders that were simply gone earn a second look; liars and
		// stalling holders are already judged, and another round of them
		// would hold a fetch slot for nothing.
		if again == 1 || ctx.Err() != nil || len(res.Rejected) > 0 || len(res.Faulty) > 0 {
			return res, holders, fmt.Errorf("node: fetch %s from %d holders: %w", ref, len(holders), err)
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
func (n *Node) transfer(ctx context.Context, f *flight, ref syncnode.BlobRef, holders []peer.ID, wholeOnly bool) (blobproto.FetchResult, error) {
	marked := make(chan error, 1)
	go func() { marked <- n.ledger.MarkFetched(ref) }()
	res, err := n.client.FetchWith(ctx, ref, holders, blobproto.FetchOptions{
		Progress: func(p blobproto.Progress) {
			// A whole-blob ask is still locating until bytes come: a
			// larger blob goes on to a locate.
			if !wholeOnly || p.Received > 0 || p.Total == 0 {
				f.set(Status{State: Fetching, Received: p.Received, Total: p.Total, Holders: holders})
			}
		},
		Commit: func(commit func() (blobstore.Info, error)) (blobstore.Info, error) {
			if err := <-marked; err != nil {
				return blobstore.Info{}, err
			}
			unlock := n.locks.lock(ref)
			defer unlock()
			info, err := commit()
			if h := n.hook.inCommit.Load(); h != nil && err == nil {
				(*h)(ref)
			}
			return info, err
		},
		WholeOnly: wholeOnly,
	})
	n.stats.bytesIn.Add(res.FromNetwork)
	n.judge(ref, res, err == nil)
	if !errors.Is(err, blobproto.ErrNotWhole) {
		n.noteRoute(ref, res, err)
	}
	return res, err
}

// likelyHolder returns the peer to ask first for ref with no question
// asked: the first hint, else the best-ranked location of its signpost
// that is connected, in good standing and not a mere proxy.
func (n *Node) likelyHolder(ref syncnode.BlobRef, hints []peer.ID) (peer.ID, bool) {
	usable := func(p peer.ID) bool {
		return p != n.h.ID() && n.inGoodStanding(p) && n.connected(p)
	}
	for _, p := range hints {
		if usable(p) {
			return p, true
		}
	}
	sp, err := n.signposts.Get(ref)
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

// fetched records that this node now holds ref, of size bytes: it
// provides the blob and names itself in the signpost.
func (n *Node) fetched(ref syncnode.BlobRef, size int64) {
	n.announce(ref)
	n.lru.touch(ref, time.Now(), size)
	defer n.evictSoon()
	sp, err := n.signposts.Get(ref)
	if err != nil && !errors.Is(err, syncnode.ErrNotFound) {
		n.log.Error("signpost unreadable", "blob", ref, "err", err)
		return
	}
	var g syncnode.GroupID
	if gs := sp.Groups(); len(gs) > 0 {
		g = gs[0]
	}
	loc := n.location(g, n.h.ID(), false)
	loc.IsServer = n.isServerIn(sp.Groups())
	if _, err := n.signposts.Update(ref, func(sp *signpost.Signpost) { sp.AddLocation(n.h.ID(), loc) }); err != nil {
		n.log.Error("signpost not updated", "blob", ref, "err", err)
	}
}

// judge records how ref's holders behaved in a fetch: liars are banned
// and dropped from the signpost, holders that stalled, truncated or reset
// are demoted, and those that delivered a blob that completed are cleared.
func (n *Node) judge(ref syncnode.BlobRef, res blobproto.FetchResult, ok bool) {
	now := time.Now()
	for _, p := range res.Faulty {
		n.rep.faulted(p, now)
	}
	if len(res.Faulty) > 0 {
		n.log.Info("holders failed mid-transfer; demoted", "blob", ref, "peers", res.Faulty)
	}
	if ok {
		for p, b := range res.BytesBy {
			if b > 0 && !slices.Contains(res.Faulty, p) && !slices.Contains(res.Rejected, p) {
				n.rep.served(p)
				n.returns.servedBy(p)
			}
		}
	}
	if len(res.Rejected) == 0 {
		return
	}
	n.stats.rejected.Add(int64(len(res.Rejected)))
	for _, p := range res.Rejected {
		n.rep.lied(p, now)
	}
	n.log.Warn("holders sent bytes that do not match the blob; banned", "blob", ref, "peers", res.Rejected)
	_, err := n.signposts.Update(ref, func(sp *signpost.Signpost) {
		for _, p := range res.Rejected {
			delete(sp.Locations, p)
		}
	})
	if err != nil {
		n.log.Error("signpost not updated", "blob", ref, "err", err)
	}
}

func (n *Node) haveTimeout() time.Duration { return max(n.cfg.IOTimeout/4, time.Second) }

// learnFromHolder merges the signpost a peer answered with (see
// mergeFrom) and puts its locations' addresses in the peerstore.
func (n *Node) learnFromHolder(from peer.ID, ref syncnode.BlobRef, sp *signpost.Signpost) {
	for p, l := range sp.Locations {
		n.addAddrs(p, l.Addrs)
	}
	// An answer about a blob this node knows from rows names no group of
	// its own: which groups reference a blob, rows tell, not a peer's word.
	if mine := n.groupsOf(ref); len(mine) > 0 {
		for g := range sp.SgIDs {
			if !slices.Contains(mine, g) {
				delete(sp.SgIDs, g)
			}
		}
	}
	n.mergeFrom(from, ref, sp)
}

func (n *Node) addAddrs(p peer.ID, addrs []string) {
	for _, a := range addrs {
		if m, err := ma.NewMultiaddr(a); err == nil {
			n.h.Peerstore().AddAddr(p, m, peerstore.AddressTTL)
		}
	}
}

// takeShares asks the peers that may hold shares of ref for them, in each
// group of the signpost this node is in: holders (the peers this node
// fetched from, and extra), and the signpost's locations that are not
// servers — proxies included, since a member that relayed a row may hold
// the blob and its shares too. It fails if a holder could not be asked,
// so that a caller retries later; a proxy that cannot be reached is only
// logged (it hands its shares off itself when it next syncs with a server).
// Unless waitAll, only the extra holders (the peers just fetched from,
// which have just answered) are waited for: the others are asked in the
// background, so that a user's fetch never waits on a device that is gone.
func (n *Node) takeShares(ctx context.Context, ref syncnode.BlobRef, extra []peer.ID, waitAll bool) error {
	unpin := n.pins.pin(ref)
	defer unpin()
	sp, err := n.signposts.Get(ref)
	if err != nil {
		return err
	}
	type cand struct {
		p      peer.ID
		holder bool
	}
	var cands []cand
	seen := map[peer.ID]bool{n.h.ID(): true}
	for _, p := range extra {
		if !seen[p] {
			seen[p] = true
			cands = append(cands, cand{p, true})
		}
	}
	for _, l := range sp.Ranked() {
		loc := sp.Locations[l.Peer]
		if !seen[l.Peer] && !loc.IsServer {
			seen[l.Peer] = true
			cands = append(cands, cand{l.Peer, !loc.IsProxy})
		}
	}
	// Each candidate is asked on its own goroutine: one slow or absent
	// device does not hold up the others, nor the fetch slot for long.
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, g := range sp.Groups() {
		if !n.sync.IsMember(n.h.ID(), g) || n.serverKeeps(ctx, ref, sp, g) {
			continue
		}
		for _, c := range cands {
			if !n.sync.IsMember(c.p, g) {
				continue
			}
			if !waitAll && !slices.Contains(extra, c.p) {
				n.goRun(func() { n.take(n.ctx, ref, g, c.p) })
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := n.take(ctx, ref, g, c.p); err != nil && c.holder {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// serverKeeps reports whether a device should leave ref's shares in g
// alone: this node is no server of g, and a server of g has said that it
// holds the blob (a location counts as a server's only on its own word).
// The group's shares belong there; a device that took some from a member
// claiming to hold them would only pin its copy.
func (n *Node) serverKeeps(ctx context.Context, ref syncnode.BlobRef, sp signpost.Signpost, g syncnode.GroupID) bool {
	if me, err := n.sync.Priority(g); err != nil || me.DevType == syncnode.Server {
		return false
	}
	for p, l := range sp.Locations {
		if l.IsServer && p != n.h.ID() {
			if pp, ok := n.sync.PeerPriority(g, p); ok && pp.DevType == syncnode.Server {
				return true
			}
		}
	}
	// The signpost may not know yet: the connected servers are asked.
	for _, m := range n.Members(g) {
		if m.DevType != syncnode.Server || m.Peer == n.h.ID() || !n.connected(m.Peer) {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		r, err := n.client.Have(hctx, m.Peer, ref)
		cancel()
		if err == nil && r.Have {
			return true
		}
	}
	return false
}

// take asks p for its shares of ref in g, and logs what came of it.
func (n *Node) take(ctx context.Context, ref syncnode.BlobRef, g syncnode.GroupID, p peer.ID) error {
	res, err := n.takes.Take(ctx, p, ref, g)
	switch {
	case err != nil:
		n.log.Debug("shares not taken", "blob", ref, "group", g, "peer", p, "err", err)
	case res.Taken > 0:
		n.log.Info("took ownership shares", "blob", ref, "group", g, "from", p, "shares", res.Taken, "holder keeps", res.HolderKeeps)
	}
	return err
}
