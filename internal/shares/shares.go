// Package shares moves ownership shares between devices over libp2p: a
// device that holds a blob verified asks a holder for its shares; the
// holder decides by the priorities the syncgroup knows (never by what the
// asker claims), escrows, and settles once the asker has accepted. The
// three steps (challenge, offer, settle) go for up to MaxBatch blobs from
// one holder in one request each, every item checked as a single request.
package shares

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"lukechampine.com/blake3"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/p2p"
)

// Errors of share transfers.
var (
	// ErrRefused reports a holder that refused to offer shares.
	ErrRefused = errors.New("shares: refused")
)

// Priorities answers who a peer is in a syncgroup. The syncer implements it.
type Priorities interface {
	// Priority returns this node's priority in group g.
	Priority(g syncnode.GroupID) (syncnode.Priority, error)
	// PeerPriority returns member p's priority in g, its device type taken
	// from the membership; false if p is not a member.
	PeerPriority(g syncnode.GroupID, p peer.ID) (syncnode.Priority, bool)
	// IsAdmin reports whether p is an admin of g.
	IsAdmin(g syncnode.GroupID, p peer.ID) bool
}

// Copies guards this node's copies of blobs. The node implements it.
type Copies interface {
	// Holds reports whether this node holds ref, whole and verified.
	Holds(ref syncnode.BlobRef) bool
	// WithCopy runs fn while no deletion of ref's copy can run, with held
	// saying whether this node holds it verified, and returns fn's error.
	// Accepting shares happens inside it, so shares are never accepted
	// for a copy that is being deleted (I3).
	WithCopy(ref syncnode.BlobRef, fn func(held bool) error) error
	// Open opens a held blob for reading, every byte verified: possession
	// is proved with a keyed hash of all of it.
	Open(ref syncnode.BlobRef) (Blob, error)
}

// Blob is an open copy of a blob.
type Blob interface {
	io.ReaderAt
	io.Closer
	// Size returns the blob's length in bytes.
	Size() int64
}

// SettledFunc is told of every transfer this node settled as the holder:
// accepted, its shares are now t.To's.
type SettledFunc func(t ownership.Transfer, accepted bool)

// AskedFunc is told that member from, handing off a blob (a leaf to a
// non-leaf, a device to a server), asks this node to take its shares of
// ref in group g, fetching the blob from it first if needed. It returns
// when the shares have moved or cannot; ctx ends after AskWait.
//
// leaving tells that from is leaving g and hands off everything it holds
// there, to any member, whatever the two device types.
type AskedFunc func(ctx context.Context, from peer.ID, ref syncnode.BlobRef, g syncnode.GroupID, leaving bool) (Result, error)

// DefaultAskWait is how long a hand-off may take by default: the member
// asked may have to fetch the blob first.
const DefaultAskWait = 5 * time.Minute

// DefaultEscrowWait is how long, by default, a transfer waits in escrow
// for an acceptor that does not answer: long enough for a restart or a
// short outage, short enough that a device whose taker died is not
// pinned for good and a new server can take the shares.
const DefaultEscrowWait = time.Hour

// Service answers share requests and makes them.
type Service struct {
	h       host.Host
	ledger  *ownership.Ledger
	prio    Priorities
	copies  Copies
	asked   AskedFunc
	settled SettledFunc
	log     *slog.Logger
	timeout time.Duration

	// AskWait bounds a hand-off, at both ends (default DefaultAskWait).
	// Set it before the service is used.
	AskWait time.Duration
	// EscrowWait is how long shares stay in escrow for an acceptor that
	// does not answer before Recover ends the transfer without it
	// (default DefaultEscrowWait). Set it before the service is used.
	EscrowWait time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	// escrowed is signalled when an offer puts shares in escrow.
	escrowed chan struct{}
	// secret keys the possession challenges this node sets.
	secret [32]byte

	// proving runs possession checks one at a time per member.
	proving peerLocks
	// handlers are the requests being answered; Close waits for them.
	handlers sync.WaitGroup

	// accepting is held (read) by every acceptance while it checks that
	// its group is not being left and records the shares; Leaving takes
	// it to wait for those under way.
	accepting sync.RWMutex

	mu sync.Mutex
	// frozen are the groups where an admin about to eject this node asked
	// what it keeps, until when this node accepts no shares there.
	frozen map[syncnode.GroupID]time.Time
	// leaving are the groups this node is leaving (see Leaving).
	leaving map[syncnode.GroupID]bool
	// closed: Close has run; no request is answered any more.
	closed bool
}

// New registers the shares protocol on h. asked may be nil: then requests
// to take a blob are refused. settled may be nil.
func New(h host.Host, ledger *ownership.Ledger, prio Priorities, copies Copies, asked AskedFunc, settled SettledFunc, log *slog.Logger) *Service {
	if settled == nil {
		settled = func(ownership.Transfer, bool) {}
	}
	s := &Service{h: h, ledger: ledger, prio: prio, copies: copies, asked: asked, settled: settled, log: log,
		timeout: 20 * time.Second, AskWait: DefaultAskWait, EscrowWait: DefaultEscrowWait, escrowed: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	rand.Read(s.secret[:])
	h.SetStreamHandler(p2p.ProtoShares, s.handle)
	return s
}

// Escrowed is signalled (without blocking, so signals merge) whenever an
// offer puts shares in escrow here: if the acceptor's settle never comes,
// Recover must run.
func (s *Service) Escrowed() <-chan struct{} { return s.escrowed }

// Close unregisters the protocol, ends the hand-offs it is serving and
// waits for the requests being answered.
func (s *Service) Close() {
	s.h.RemoveStreamHandler(p2p.ProtoShares)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	// The ledger outlives the service only until its owner closes it:
	// no request may still be writing to it then.
	s.handlers.Wait()
}

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
		resp, err := s.call(ctx, holder, request{Op: opChallenges, Items: reqs}, s.timeout)
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

// takeBatch runs the three steps for items, at most MaxBatch of them.
func (s *Service) takeBatch(ctx context.Context, holder peer.ID, items []Item, res []Result, errs []error) {
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
	// step sends op for live and keeps the items whose answers pass ok.
	step := func(op string, ok func(pt *pendingTake, r response) bool) {
		reqs := make([]request, len(live))
		for k, pt := range live {
			reqs[k] = pt.req
		}
		resp, err := s.call(ctx, holder, request{Op: op, Items: reqs}, s.timeout)
		if err == nil && len(resp.Items) != len(reqs) {
			err = fmt.Errorf("shares: %s answered %d of %d items", holder, len(resp.Items), len(reqs))
		}
		var kept []*pendingTake
		for k, pt := range live {
			switch {
			case err != nil:
				errs[pt.i] = err
			case resp.Items[k].Err != "":
				errs[pt.i] = fmt.Errorf("%w by %s: %s", ErrRefused, holder, resp.Items[k].Err)
				res[pt.i].Escrow = resp.Items[k].Escrow
			case ok(pt, resp.Items[k]):
				kept = append(kept, pt)
			}
		}
		live = kept
	}
	// Possession first: the holder names a key only it can predict, and
	// checks a hash of the whole blob under that key against its own copy.
	step(opChallenges, func(pt *pendingTake, r response) bool {
		if r.Nothing {
			return false // nothing to take: a zero result
		}
		proof, err := s.prove(pt.req.Ref, r.Nonce)
		if err != nil {
			errs[pt.i] = fmt.Errorf("shares: possession proof of %s: %w", pt.req.Ref, err)
			return false
		}
		pt.req.Proof = proof
		return true
	})
	if len(live) == 0 {
		return
	}
	step(opOffers, func(pt *pendingTake, r response) bool {
		pt.req.Proof = nil
		switch {
		case r.Transfer == nil:
			errs[pt.i] = fmt.Errorf("shares: %s offered no transfer", holder)
			return false
		case r.Transfer.N == 0:
			res[pt.i] = Result{HolderKeeps: true}
			return false
		case r.Transfer.ID != pt.req.ID || r.Transfer.Ref != pt.req.Ref || r.Transfer.Group != pt.req.Group || r.Transfer.N < 0:
			errs[pt.i] = fmt.Errorf("shares: %s answered with another transfer", holder)
			return false
		}
		pt.t = *r.Transfer
		return true
	})
	if len(live) == 0 {
		return
	}
	// Accepted only while the copy is held and cannot be deleted: shares
	// never land on a copy an eviction is removing. The acceptances run
	// at once, so that their ledger writes share syncs.
	var wg sync.WaitGroup
	for _, pt := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pt.t.From = holder // only it may void the transfer
			s.accepting.RLock()
			defer s.accepting.RUnlock()
			if s.isLeaving(pt.req.Group) || s.isFrozen(pt.req.Group) {
				pt.err = fmt.Errorf("shares: this node is leaving %s, or an admin is ejecting it, and takes no shares there", pt.req.Group)
				return
			}
			pt.err = s.copies.WithCopy(pt.req.Ref, func(held bool) error { return s.ledger.Accept(pt.t, held) })
			pt.req.Accepted = pt.err == nil
		}()
	}
	wg.Wait()
	settled := slices.Clone(live)
	step(opSettles, func(pt *pendingTake, r response) bool {
		if pt.err == nil {
			res[pt.i] = Result{Taken: pt.t.N, HolderKeeps: r.Keeps}
		}
		return false
	})
	for _, pt := range settled {
		switch {
		case pt.err != nil:
			// Not accepted: the holder returned the escrow (or will, when
			// it resolves the transfer).
			errs[pt.i] = pt.err
		case errs[pt.i] != nil:
			// Accepted here; the holder settles when it resolves the
			// transfer.
			s.log.Info("settle not confirmed; the holder will resolve", "holder", holder, "blob", pt.req.Ref, "err", errs[pt.i])
			res[pt.i], errs[pt.i] = Result{Taken: pt.t.N, HolderKeeps: true}, nil
		}
	}
}

// ResolveAt asks the acceptor of transfer t how it ended, which fixes
// the outcome there (a transfer not accepted yet never will be): whether
// it accepted t's shares. An admin ejecting t's holder asks, to know
// whether those shares are with a member that stays.
func (s *Service) ResolveAt(ctx context.Context, t ownership.Transfer) (bool, error) {
	resp, err := s.call(ctx, t.To, request{Op: opResolve, ID: t.ID, Ref: t.Ref}, s.timeout)
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
	resp, err := s.call(ctx, p, req, s.AskWait+s.timeout)
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

// Leaving marks this node as leaving group g (or no longer): while it
// is, every share it holds in g is offered whole to any member that
// proves it holds the blob, whatever the priorities, and it accepts none
// there. Marking waits for the acceptances under way to end.
func (s *Service) Leaving(g syncnode.GroupID, on bool) {
	s.mu.Lock()
	if s.leaving == nil {
		s.leaving = map[syncnode.GroupID]bool{}
	}
	if on {
		s.leaving[g] = true
	} else {
		delete(s.leaving, g)
	}
	s.mu.Unlock()
	if on {
		// A take under way when the leave began must not land its shares
		// after the leave counted what it holds: wait for the acceptances
		// under way, which see the mark from now on.
		s.accepting.Lock()
		s.accepting.Unlock()
	}
}

// EjectFreeze is how long a node asked what it keeps by an admin about to
// eject it accepts no shares in that group: longer than an ejection's
// fetches and hand-offs take, short enough that a refused ejection does
// not stop it for long.
const EjectFreeze = 2 * time.Minute

// freeze stops acceptances in g for EjectFreeze, once those under way
// have landed.
func (s *Service) freeze(g syncnode.GroupID) {
	s.mu.Lock()
	if s.frozen == nil {
		s.frozen = map[syncnode.GroupID]time.Time{}
	}
	s.frozen[g] = time.Now().Add(EjectFreeze)
	s.mu.Unlock()
	s.accepting.Lock()
	s.accepting.Unlock()
}

func (s *Service) isFrozen(g syncnode.GroupID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.frozen[g]
	if ok && time.Now().After(until) {
		delete(s.frozen, g)
		return false
	}
	return ok
}

func (s *Service) isLeaving(g syncnode.GroupID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leaving[g]
}

// Recover settles every transfer left in escrow here (by a crash or a lost
// answer): it asks each acceptor whether it accepted, which also closes the
// transfer there for good, and settles accordingly. A transfer whose
// acceptor cannot be reached stays in escrow until it is EscrowWait old,
// then is abandoned: the shares return here, and the acceptor, once it
// answers again, is told to drop whatever it accepted. It returns how
// many transfers it ended.
func (s *Service) Recover(ctx context.Context) (int, error) {
	pending, err := s.ledger.AllPending()
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, t := range pending {
		resp, err := s.call(ctx, t.To, request{Op: opResolve, ID: t.ID, Ref: t.Ref}, s.timeout)
		if err != nil {
			if s.outgrown(t) {
				if ok, aerr := s.ledger.Abandon(t.Ref, t.ID); aerr != nil {
					errs = append(errs, aerr)
				} else if ok {
					s.log.Warn("share transfer abandoned: its acceptor has not answered", "blob", t.Ref, "group", t.Group,
						"acceptor", t.To, "escrowed", time.Unix(0, t.At), "member", s.isMember(t.Group, t.To), "err", err)
					s.settled(t, false)
					n++
					continue
				}
			}
			errs = append(errs, err)
			continue
		}
		if _, err := s.ledger.Settle(t.Ref, t.ID, resp.Accepted); err != nil {
			errs = append(errs, err)
			continue
		}
		s.settled(t, resp.Accepted)
		n++
	}
	if err := s.tellVoided(ctx); err != nil {
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}

// outgrown reports whether transfer t, whose acceptor did not answer, has
// waited long enough in escrow: EscrowWait, or no time at all once the
// acceptor is no longer a member of the group (it left or was ejected;
// shares it holds count for nothing) while this node still is. A node
// that is out itself cannot tell, and waits.
func (s *Service) outgrown(t ownership.Transfer) bool {
	if t.At > 0 && time.Since(time.Unix(0, t.At)) > s.EscrowWait {
		return true
	}
	return s.isMember(t.Group, s.h.ID()) && !s.isMember(t.Group, t.To)
}

func (s *Service) isMember(g syncnode.GroupID, p peer.ID) bool {
	_, ok := s.prio.PeerPriority(g, p)
	return ok
}

// tellVoided tells the acceptor of every transfer abandoned here to drop
// what it accepted of it.
func (s *Service) tellVoided(ctx context.Context) error {
	voided, err := s.ledger.AllVoided()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range voided {
		if _, err := s.call(ctx, t.To, request{Op: opVoid, ID: t.ID, Ref: t.Ref}, s.timeout); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.ledger.Told(t.Ref, t.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Unfinished reports how many transfers wait here for their acceptor: in
// escrow, or abandoned and not yet voided there.
func (s *Service) Unfinished() (int, error) { return s.ledger.Unfinished() }

// call sends req to p and waits up to wait for the answer.
func (s *Service) call(ctx context.Context, p peer.ID, req request, wait time.Duration) (response, error) {
	var resp response
	err := p2p.Exchange(ctx, s.h, p, p2p.ProtoShares, func(st network.Stream) error {
		defer st.Close()
		stop := context.AfterFunc(ctx, func() { st.Reset() })
		defer stop()
		if err := p2p.WriteMsg(st, req, s.timeout); err != nil {
			st.Reset()
			return err
		}
		if err := p2p.ReadMsg(bufio.NewReader(st), st, &resp, p2p.MaxFrame, wait); err != nil {
			st.Reset()
			return err
		}
		return nil
	})
	if err != nil {
		return response{}, fmt.Errorf("shares: %s: %w", p, err)
	}
	if resp.Err != "" {
		return resp, fmt.Errorf("%w by %s: %s", ErrRefused, p, resp.Err)
	}
	return resp, nil
}

// ErrNoProof reports a share request whose proof of possession failed.
var ErrNoProof = errors.New("shares: possession of the blob not proved")

// ProofSize is the length of a possession challenge's nonce and of the
// proof that answers it.
const ProofSize = 32

// challenge returns the nonce that keys the proof of possession of ref for
// transfer id: a keyed hash only this node can compute, so no requester
// can prepare for it. The proof is a hash of every byte of the blob under
// that key. No part of it can be fetched or relayed: a member proves it
// holds the whole blob by reading the whole blob, and no other member
// computes a proof under this node's nonce.
func (s *Service) challenge(id ownership.TransferID, ref syncnode.BlobRef) ([]byte, error) {
	if !s.copies.Holds(ref) {
		return nil, fmt.Errorf("shares: cannot check possession of %s here: %w", ref, syncnode.ErrNotFound)
	}
	m := hmac.New(sha256.New, s.secret[:])
	m.Write(id[:])
	h := ref.Hash()
	m.Write(h[:])
	return m.Sum(nil)[:ProofSize], nil
}

// prove returns the keyed hash of every byte of this node's copy of ref.
func (s *Service) prove(ref syncnode.BlobRef, nonce []byte) ([]byte, error) {
	if len(nonce) != ProofSize {
		return nil, fmt.Errorf("shares: a challenge nonce of %d bytes, want %d", len(nonce), ProofSize)
	}
	b, err := s.copies.Open(ref)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	h := blake3.New(ProofSize, nonce)
	if _, err := io.CopyBuffer(h, io.NewSectionReader(b, 0, b.Size()), make([]byte, 1<<20)); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// checkProof verifies proof, the requester's keyed hash of ref for
// transfer id, against this node's own copy. Checks run one at a time per
// member: a member that sends offers on many streams at once waits for
// its own, never for another's.
func (s *Service) checkProof(from peer.ID, id ownership.TransferID, ref syncnode.BlobRef, proof []byte) error {
	nonce, err := s.challenge(id, ref)
	if err != nil {
		return err
	}
	if len(proof) != ProofSize {
		return fmt.Errorf("%w: %s", ErrNoProof, ref)
	}
	unlock := s.proving.lock(from)
	defer unlock()
	want, err := s.prove(ref, nonce)
	if err != nil {
		return fmt.Errorf("shares: cannot check possession of %s here: %w", ref, err)
	}
	if !hmac.Equal(want, proof) {
		return fmt.Errorf("%w: %s", ErrNoProof, ref)
	}
	return nil
}

// settlePending ends the transfers of ref in g waiting in escrow here,
// asking each acceptor how it ended (which fixes the outcome there: a
// transfer not accepted yet never will be). An admin about to eject this
// node must learn whether those shares are with another member or back
// here, to be offered to it; only an acceptor that does not answer leaves
// its transfer in escrow.
func (s *Service) settlePending(ref syncnode.BlobRef, g syncnode.GroupID) {
	pending, err := s.ledger.Pending(ref)
	if err != nil {
		return
	}
	for _, t := range pending {
		if t.Group != g {
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
		resp, err := s.call(ctx, t.To, request{Op: opResolve, ID: t.ID, Ref: t.Ref}, s.timeout)
		cancel()
		if err != nil {
			continue
		}
		if _, err := s.ledger.Settle(t.Ref, t.ID, resp.Accepted); err == nil {
			s.settled(t, resp.Accepted)
		}
	}
}

// holding returns how many shares of ref this node keeps in g, those in
// escrow included (at most the group's two), and whether it keeps none
// at all, held or in escrow: a challenge for them would cost both sides
// a proof for nothing. A ledger that cannot be read counts as keeping
// some.
func (s *Service) holding(ref syncnode.BlobRef, g syncnode.GroupID) (held int, none bool) {
	sh, err := s.ledger.Shares(ref)
	if err != nil {
		return 0, false
	}
	pending, err := s.ledger.Pending(ref)
	if err != nil {
		return 0, false
	}
	n, escrowed := sh[g], false
	for _, t := range pending {
		if t.Group == g {
			n, escrowed = n+t.N, true
		}
	}
	return min(max(n, 0), ownership.CreatorShares), sh[g] <= 0 && !escrowed
}

func (s *Service) handle(st network.Stream) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		st.Reset()
		return
	}
	s.handlers.Add(1)
	s.mu.Unlock()
	defer s.handlers.Done()
	defer st.Close()
	from := st.Conn().RemotePeer()
	var req request
	if err := p2p.ReadMsg(bufio.NewReader(st), st, &req, p2p.MaxFrame, s.timeout); err != nil {
		st.Reset()
		return
	}
	resp, err := s.answer(from, req)
	if err != nil {
		s.log.Info("share request refused", "peer", from, "op", req.Op, "blob", req.Ref, "err", err)
		resp = response{Err: err.Error()}
	}
	p2p.WriteMsg(st, resp, s.timeout)
}

func (s *Service) answer(from peer.ID, req request) (response, error) {
	if op, ok := batchOf[req.Op]; ok {
		return s.answerBatch(from, op, req.Items)
	}
	if len(req.Items) > 0 {
		return response{}, fmt.Errorf("operation %q takes no items", req.Op)
	}
	switch req.Op {
	case opChallenge:
		if _, ok := s.prio.PeerPriority(req.Group, from); !ok {
			return response{}, fmt.Errorf("%s is not a member of %s", from, req.Group)
		}
		if req.Ejecting && s.prio.IsAdmin(req.Group, from) {
			// An admin about to eject this node asks what it keeps: the
			// answer must hold until the ejection, so it accepts no
			// shares there for a while (those under way first land).
			s.freeze(req.Group)
		}
		held, none := s.holding(req.Ref, req.Group)
		if none {
			return response{Nothing: true}, nil
		}
		nonce, err := s.challenge(req.ID, req.Ref)
		return response{Nonce: nonce, Held: held}, err
	case opOffer:
		them, ok := s.prio.PeerPriority(req.Group, from)
		if !ok {
			return response{}, fmt.Errorf("%s is not a member of %s", from, req.Group)
		}
		me, err := s.prio.Priority(req.Group)
		if err != nil {
			return response{}, err
		}
		if err := s.checkProof(from, req.ID, req.Ref, req.Proof); err != nil {
			return response{}, err
		}
		count := func(held int) int { return ownership.OfferCount(me, them, held) }
		ejecting := req.Ejecting && s.prio.IsAdmin(req.Group, from)
		if ejecting {
			s.settlePending(req.Ref, req.Group)
		}
		if s.isLeaving(req.Group) || ejecting {
			count = func(held int) int { return held }
		}
		if req.Want > 0 {
			c := count
			count = func(held int) int { return min(c(held), req.Want) }
		}
		t, err := s.ledger.OfferCounted(req.ID, req.Ref, req.Group, from, count)
		// An admin about to eject this node learns which transfers hold
		// the shares; one that settled meanwhile frees them: offer again.
		for try := 0; ejecting && errors.Is(err, ownership.ErrInEscrow); try++ {
			var escrow []ownership.Transfer
			pending, _ := s.ledger.Pending(req.Ref)
			for _, p := range pending {
				if p.Group == req.Group {
					escrow = append(escrow, p)
				}
			}
			if len(escrow) > 0 || try == 3 {
				return response{Err: err.Error(), Escrow: escrow}, nil
			}
			t, err = s.ledger.OfferCounted(req.ID, req.Ref, req.Group, from, count)
		}
		if err == nil && t.N > 0 {
			select {
			case s.escrowed <- struct{}{}:
			default:
			}
		}
		return response{Transfer: &t}, err
	case opSettle:
		// Only the acceptor named in the escrow may settle it.
		pending, err := s.ledger.Pending(req.Ref)
		if err != nil {
			return response{}, err
		}
		var mine *ownership.Transfer
		for _, t := range pending {
			if t.ID == req.ID {
				if t.To != from {
					return response{}, fmt.Errorf("transfer %s is not %s's", req.ID, from)
				}
				mine = &t
			}
		}
		keeps, err := s.ledger.Settle(req.Ref, req.ID, req.Accepted)
		if err == nil && mine != nil {
			s.settled(*mine, req.Accepted)
		}
		return response{Keeps: keeps}, err
	case opResolve:
		acc, err := s.ledger.Resolve(req.ID)
		return response{Accepted: acc}, err
	case opVoid:
		_, err := s.ledger.Void(req.ID, from)
		return response{}, err
	case opAsk:
		if _, ok := s.prio.PeerPriority(req.Group, from); !ok {
			return response{}, fmt.Errorf("%s is not a member of %s", from, req.Group)
		}
		if s.asked == nil {
			return response{}, errors.New("this node takes no blobs on request")
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.AskWait)
		defer cancel()
		res, err := s.asked(ctx, from, req.Ref, req.Group, req.Leaving)
		return response{Taken: res.Taken, Surplus: res.Surplus}, err
	}
	return response{}, fmt.Errorf("unknown operation %q", req.Op)
}

// answerBatch answers each item as the single operation op, with the same
// checks, all at once so that their ledger writes share syncs. Items of
// one blob run one after another.
func (s *Service) answerBatch(from peer.ID, op string, items []request) (response, error) {
	if len(items) > MaxBatch {
		return response{}, fmt.Errorf("%d items in one batch, at most %d", len(items), MaxBatch)
	}
	out := make([]response, len(items))
	byRef := map[syncnode.BlobRef][]int{}
	for i, it := range items {
		byRef[it.Ref] = append(byRef[it.Ref], i)
	}
	var wg sync.WaitGroup
	for _, idx := range byRef {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, i := range idx {
				it := items[i]
				single := request{Op: op, ID: it.ID, Ref: it.Ref, Group: it.Group, Accepted: it.Accepted, Proof: it.Proof, Ejecting: it.Ejecting, Want: it.Want}
				r, err := s.answer(from, single)
				if err != nil {
					s.log.Info("share request refused", "peer", from, "op", op, "blob", it.Ref, "err", err)
					r = response{Err: err.Error()}
				}
				out[i] = r
			}
		}()
	}
	wg.Wait()
	return response{Items: out}, nil
}

// peerLocks are mutexes per peer, each kept only while someone holds or
// waits for it.
type peerLocks struct {
	mu    sync.Mutex
	locks map[peer.ID]*peerLock
}

type peerLock struct {
	sync.Mutex
	users int
}

// lock locks p's mutex and returns its unlock.
func (l *peerLocks) lock(p peer.ID) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[peer.ID]*peerLock{}
	}
	pl := l.locks[p]
	if pl == nil {
		pl = &peerLock{}
		l.locks[p] = pl
	}
	pl.users++
	l.mu.Unlock()
	pl.Lock()
	return func() {
		pl.Unlock()
		l.mu.Lock()
		if pl.users--; pl.users == 0 {
			delete(l.locks, p)
		}
		l.mu.Unlock()
	}
}
