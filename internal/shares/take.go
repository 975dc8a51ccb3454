package shares

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/ownership"
)

// Result is the outcome of Take.
type Result struct {
	// Taken is how many shares moved to this node.
	Taken int
	// HolderKeeps reports whether the holder still has shares of the blob.
	HolderKeeps bool
	// Escrow, with ErrRefused, are the holder's transfers of the blob in
	// the group still in escrow, as it names them to an admin about to
	// eject it (see ResolveAt).
	Escrow []ownership.Transfer
	// Surplus answers an ask: the asked node, a server, holds the group's
	// two shares of the blob already, with a verified copy, so the
	// asker's are surplus (a member that offered shares it never had
	// made them) and were dropped.
	Surplus bool
}

// Take asks holder for its shares of ref in group g. This node must hold
// the blob verified. The shares arrive in escrow at the holder, are
// accepted here, and the holder is told to settle.
func (s *Service) Take(ctx context.Context, holder peer.ID, ref syncnode.BlobRef, g syncnode.GroupID) (Result, error) {
	res, errs := s.TakeAll(ctx, holder, []Item{{Ref: ref, Group: g}})
	return res[0], errs[0]
}

// Item names the shares of one blob in one group.
type Item struct {
	Ref   syncnode.BlobRef
	Group syncnode.GroupID
	// Ejecting marks a request of an admin of the group about to eject
	// the holder: a take gets every share the holder has, and Keeps
	// stops the holder accepting shares there for EjectFreeze, so that
	// its answer still holds when the ejection comes.
	Ejecting bool
}

// Keeps asks holder which of items it keeps shares of, held or in
// escrow: the answer to a possession challenge, which costs the holder one
// keyed hash. A refused challenge (the holder restoring its copy, say)
// counts as kept: the caller then makes sure of the blob. It fails as a
// whole if holder does not answer.
func (s *Service) Keeps(ctx context.Context, holder peer.ID, items []Item) ([]bool, error) {
	keeps, _, err := s.KeepsOrRefused(ctx, holder, items)
	return keeps, err
}

// KeepsOrRefused is Keeps, with refused true for the items whose
// challenge the holder refused (their keeps is true).
func (s *Service) KeepsOrRefused(ctx context.Context, holder peer.ID, items []Item) (keeps, refused []bool, err error) {
	keeps, refused, _, err = s.keeps(ctx, holder, items)
	return keeps, refused, err
}

// HeldBy asks holder how many shares of each of items it keeps, held or
// in escrow (its word, at most two each; 0 for a refused challenge).
func (s *Service) HeldBy(ctx context.Context, holder peer.ID, items []Item) ([]int, error) {
	_, _, held, err := s.keeps(ctx, holder, items)
	return held, err
}

func (s *Service) keeps(ctx context.Context, holder peer.ID, items []Item) (keeps, refused []bool, held []int, err error) {
	keeps, refused, held = make([]bool, len(items)), make([]bool, len(items)), make([]int, len(items))
	for start := 0; start < len(items); start += MaxBatch {
		end := min(start+MaxBatch, len(items))
		reqs := make([]request, 0, end-start)
		for _, it := range items[start:end] {
			reqs = append(reqs, request{ID: ownership.NewTransferID(), Ref: it.Ref, Group: it.Group, Ejecting: it.Ejecting})
		}
		resp, err := s.call(ctx, holder, request{Op: opChallenges, Items: reqs}, s.cfg.IOTimeout)
		if err != nil {
			return nil, nil, nil, err
		}
		if len(resp.Items) != len(reqs) {
			return nil, nil, nil, fmt.Errorf("shares: %s answered %d of %d items", holder, len(resp.Items), len(reqs))
		}
		for k, r := range resp.Items {
			keeps[start+k], refused[start+k] = !r.Nothing, r.Err != ""
			if !r.Nothing && r.Err == "" {
				held[start+k] = min(max(r.Held, 0), ownership.CreatorShares)
			}
		}
	}
	return keeps, refused, held, nil
}

// TakeAll is Take for many blobs from one holder: each step (challenge,
// offer, settle) goes for up to MaxBatch of them in one request, and the
// ledger writes of a step share their syncs. Each item has its own result
// or error, in the order given.
func (s *Service) TakeAll(ctx context.Context, holder peer.ID, items []Item) ([]Result, []error) {
	res, errs := make([]Result, len(items)), make([]error, len(items))
	for start := 0; start < len(items); start += MaxBatch {
		end := min(start+MaxBatch, len(items))
		s.takeBatch(ctx, holder, items[start:end], res[start:end], errs[start:end])
	}
	return res, errs
}

// pendingTake is one item of a batch on its way through the steps.
type pendingTake struct {
	i   int // index in the caller's slices
	req request
	t   ownership.Transfer
	err error // set when Accept failed: the holder is told to return the escrow
}

// takeBatch runs the three steps for items, at most MaxBatch of them:
// challenge (the holder checks this node's possession proof), offer (the
// holder puts the shares in escrow), accept here, then settle (the holder
// lets go of the escrow). An item leaves the batch at the first step that
// refuses or fails it, with its error or result recorded.
func (s *Service) takeBatch(ctx context.Context, holder peer.ID, items []Item, res []Result, errs []error) {
	tr := &takeRun{s: s, ctx: ctx, holder: holder, res: res, errs: errs}
	tr.live = s.takeRequests(items, errs)
	// Possession first: the holder names a key only it can predict, and
	// checks a hash of the whole blob under that key against its own copy.
	tr.step(opChallenges, tr.proved)
	if len(tr.live) == 0 {
		return
	}
	tr.step(opOffers, tr.offered)
	if len(tr.live) == 0 {
		return
	}
	tr.acceptAll()
	settled := slices.Clone(tr.live)
	tr.step(opSettles, tr.settleAnswered)
	tr.confirm(settled)
}

// takeRequests checks each of items before anything is asked of the
// holder, recording in errs why an item cannot be taken here, and returns
// the requests for the rest. An item whose group's two shares are held
// here already gets neither a request nor an error: a zero result.
func (s *Service) takeRequests(items []Item, errs []error) []*pendingTake {
	var live []*pendingTake
	for i, it := range items {
		if !s.copies.Holds(it.Ref) {
			errs[i] = fmt.Errorf("%w: %s", ownership.ErrUnverified, it.Ref)
			continue
		}
		if s.isLeaving(it.Group) {
			errs[i] = fmt.Errorf("shares: this node is leaving %s and takes no shares there", it.Group)
			continue
		}
		// Never more than the group's two: a requester that holds some
		// (a member's false offer may have made them) asks for the rest.
		want := ownership.CreatorShares
		if sh, err := s.ledger.Shares(it.Ref); err == nil {
			want -= sh[it.Group]
		}
		if want <= 0 {
			continue // it holds the group's two already: nothing to take
		}
		live = append(live, &pendingTake{i: i, req: request{ID: ownership.NewTransferID(), Ref: it.Ref, Group: it.Group, Ejecting: it.Ejecting, Want: want}})
	}
	return live
}

// takeRun is one batch of a take from holder on its way through the
// steps: the items still live, and the caller's slices their results and
// errors go to.
type takeRun struct {
	s      *Service
	ctx    context.Context
	holder peer.ID
	res    []Result
	errs   []error
	live   []*pendingTake
}

// step sends op for the live items in one request and keeps live only
// those whose answers pass ok. A failed call, or an answer of the wrong
// length, fails every live item; an item the holder refuses gets
// ErrRefused with the escrow the holder names (see Result.Escrow). ok
// records the result or error of an item it drops.
func (tr *takeRun) step(op string, ok func(pt *pendingTake, r response) bool) {
	reqs := make([]request, len(tr.live))
	for k, pt := range tr.live {
		reqs[k] = pt.req
	}
	resp, err := tr.s.call(tr.ctx, tr.holder, request{Op: op, Items: reqs}, tr.s.cfg.IOTimeout)
	if err == nil && len(resp.Items) != len(reqs) {
		err = fmt.Errorf("shares: %s answered %d of %d items", tr.holder, len(resp.Items), len(reqs))
	}
	var kept []*pendingTake
	for k, pt := range tr.live {
		switch {
		case err != nil:
			tr.errs[pt.i] = err
		case resp.Items[k].Err != "":
			tr.errs[pt.i] = fmt.Errorf("%w by %s: %s", ErrRefused, tr.holder, resp.Items[k].Err)
			tr.res[pt.i].Escrow = resp.Items[k].Escrow
		case ok(pt, resp.Items[k]):
			kept = append(kept, pt)
		}
	}
	tr.live = kept
}

// proved takes the holder's challenge r for pt: it keeps pt with the
// possession proof of the blob under the holder's nonce, to go with the
// offer request. Nothing to take is a zero result.
func (tr *takeRun) proved(pt *pendingTake, r response) bool {
	if r.Nothing {
		return false // nothing to take: a zero result
	}
	proof, err := tr.s.prove(pt.req.Ref, r.Nonce)
	if err != nil {
		tr.errs[pt.i] = fmt.Errorf("shares: possession proof of %s: %w", pt.req.Ref, err)
		return false
	}
	pt.req.Proof = proof
	return true
}

// offered takes the holder's offer r for pt: it keeps pt with the
// transfer in escrow only if it is the one asked for (same ID, blob and
// group). An offer of no shares means the holder keeps them all.
func (tr *takeRun) offered(pt *pendingTake, r response) bool {
	pt.req.Proof = nil
	switch {
	case r.Transfer == nil:
		tr.errs[pt.i] = fmt.Errorf("shares: %s offered no transfer", tr.holder)
		return false
	case r.Transfer.N == 0:
		tr.res[pt.i] = Result{HolderKeeps: true}
		return false
	case r.Transfer.ID != pt.req.ID || r.Transfer.Ref != pt.req.Ref || r.Transfer.Group != pt.req.Group || r.Transfer.N < 0:
		tr.errs[pt.i] = fmt.Errorf("shares: %s answered with another transfer", tr.holder)
		return false
	}
	pt.t = *r.Transfer
	return true
}

// acceptAll accepts the live items' transfers into the ledger, all at
// once, so that their ledger writes share syncs, and marks each request
// with whether it was accepted (pt.err says why not) for the settle.
func (tr *takeRun) acceptAll() {
	var wg sync.WaitGroup
	for _, pt := range tr.live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr.accept(pt)
		}()
	}
	wg.Wait()
}

// accept accepts pt's transfer. Accepted only while the copy is held and
// cannot be deleted: shares never land on a copy an eviction is removing.
// Not while this node leaves the group or an admin ejects it from there,
// either: the check and the write hold s.accepting, so Leaving and freeze
// wait for the acceptances under way.
func (tr *takeRun) accept(pt *pendingTake) {
	s := tr.s
	pt.t.From = tr.holder // only it may void the transfer
	s.accepting.RLock()
	defer s.accepting.RUnlock()
	if s.isLeaving(pt.req.Group) || s.isFrozen(pt.req.Group) {
		pt.err = fmt.Errorf("shares: this node is leaving %s, or an admin is ejecting it, and takes no shares there", pt.req.Group)
		return
	}
	pt.err = s.copies.WithCopy(pt.req.Ref, func(held bool) error { return s.ledger.Accept(pt.t, held) })
	pt.req.Accepted = pt.err == nil
}

// settleAnswered takes the holder's answer r to pt's settle: an accepted
// transfer's shares are taken. No item stays live after the settle.
func (tr *takeRun) settleAnswered(pt *pendingTake, r response) bool {
	if pt.err == nil {
		tr.res[pt.i] = Result{Taken: pt.t.N, HolderKeeps: r.Keeps}
	}
	return false
}

// confirm gives each item of settled, the items sent to settle, its
// final outcome: an acceptance that failed is the item's error; an
// accepted transfer whose settle the holder did not confirm counts as
// taken all the same, since the shares are in the ledger here.
func (tr *takeRun) confirm(settled []*pendingTake) {
	for _, pt := range settled {
		switch {
		case pt.err != nil:
			// Not accepted: the holder returned the escrow (or will, when
			// it resolves the transfer).
			tr.errs[pt.i] = pt.err
		case tr.errs[pt.i] != nil:
			// Accepted here; the holder settles when it resolves the
			// transfer.
			tr.s.log.Info("settle not confirmed; the holder will resolve", "holder", tr.holder, "blob", pt.req.Ref, "err", tr.errs[pt.i])
			tr.res[pt.i], tr.errs[pt.i] = Result{Taken: pt.t.N, HolderKeeps: true}, nil
		}
	}
}

// ResolveAt asks the acceptor of transfer t how it ended, which fixes
// the outcome there (a transfer not accepted yet never will be): whether
// it accepted t's shares. An admin ejecting t's holder asks, to know
// whether those shares are with a member that stays.
func (s *Service) ResolveAt(ctx context.Context, t ownership.Transfer) (bool, error) {
	resp, err := s.call(ctx, t.To, request{Op: opResolve, ID: t.ID, Ref: t.Ref}, s.cfg.IOTimeout)
	return resp.Accepted, err
}

// Ask asks member p to take this node's shares of ref in group g,
// fetching the blob from this node first if it lacks it, as a leaf hands a
// blob off to a non-leaf and a device to a server. It returns how many
// shares p took once the hand-off has ended, or why it failed.
func (s *Service) Ask(ctx context.Context, p peer.ID, ref syncnode.BlobRef, g syncnode.GroupID) (Result, error) {
	return s.ask(ctx, p, request{Op: opAsk, Ref: ref, Group: g})
}

// AskLeaving is Ask from a node leaving g (see Leaving): p may take the
// shares whatever the two device types, and is offered all of them.
func (s *Service) AskLeaving(ctx context.Context, p peer.ID, ref syncnode.BlobRef, g syncnode.GroupID) (Result, error) {
	return s.ask(ctx, p, request{Op: opAsk, Ref: ref, Group: g, Leaving: true})
}

func (s *Service) ask(ctx context.Context, p peer.ID, req request) (Result, error) {
	resp, err := s.call(ctx, p, req, s.cfg.AskWait+s.cfg.IOTimeout)
	if err != nil || !resp.Surplus {
		return Result{Taken: resp.Taken}, err
	}
	// Only a server's own word settles it: the group's shares are its.
	if them, ok := s.prio.PeerPriority(req.Group, p); !ok || them.DevType != syncnode.Server {
		return Result{}, fmt.Errorf("shares: %s, no server of %s, calls this node's shares of %s surplus", p, req.Group, req.Ref)
	}
	if err := s.ledger.DropGroup(req.Ref, req.Group); err != nil {
		return Result{}, err
	}
	s.log.Warn("shares surplus: a server holds the group's two already; dropped here", "blob", req.Ref, "group", req.Group, "server", p)
	return Result{Surplus: true}, nil
}
