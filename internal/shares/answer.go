package shares

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/p2p"
)

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
	if err := p2p.ReadMsg(bufio.NewReader(st), st, &req, p2p.MaxFrame, s.cfg.IOTimeout); err != nil {
		st.Reset()
		return
	}
	resp, err := s.answer(from, req)
	if err != nil {
		s.log.Info("share request refused", "peer", from, "op", req.Op, "blob", req.Ref, "err", err)
		resp = response{Err: err.Error()}
	}
	p2p.WriteMsg(st, resp, s.cfg.IOTimeout)
}

// answer answers one request from peer from: a batch goes item by item to
// answerBatch, a single operation to its own method. A returned error is
// the refusal the peer is told.
func (s *Service) answer(from peer.ID, req request) (response, error) {
	if op, ok := batchOf[req.Op]; ok {
		return s.answerBatch(from, op, req.Items)
	}
	if len(req.Items) > 0 {
		return response{}, fmt.Errorf("operation %q takes no items", req.Op)
	}
	switch req.Op {
	case opChallenge:
		return s.answerChallenge(from, req)
	case opOffer:
		return s.answerOffer(from, req)
	case opSettle:
		return s.answerSettle(from, req)
	case opResolve:
		acc, err := s.ledger.Resolve(req.ID)
		return response{Accepted: acc}, err
	case opVoid:
		_, err := s.ledger.Void(req.ID, from)
		return response{}, err
	case opAsk:
		return s.answerAsk(from, req)
	}
	return response{}, fmt.Errorf("unknown operation %q", req.Op)
}

// answerChallenge answers a member's challenge for req's shares with a
// nonce for its possession proof and how many shares this node keeps, or
// with Nothing if it keeps none. An admin about to eject this node
// freezes acceptances in the group first, so that the answer still holds
// when the ejection comes.
func (s *Service) answerChallenge(from peer.ID, req request) (response, error) {
	if _, ok := s.prio.PeerPriority(req.Group, from); !ok {
		return response{}, fmt.Errorf("%s is not a member of %s", from, req.Group)
	}
	if req.Ejecting && s.prio.IsAdmin(req.Group, from) {
		// An admin about to eject this node asks what it keeps: the
		// answer must hold until the ejection, so it accepts no
		// shares there for a while (those under way first land).
		s.freeze(req.Group)
	}
	if s.challenged != nil {
		s.challenged(from, req.Ref, req.Group)
	}
	held, none := s.holding(req.Ref, req.Group)
	if none {
		return response{Nothing: true}, nil
	}
	nonce, err := s.challenge(req.ID, req.Ref)
	return response{Nonce: nonce, Held: held}, err
}

// answerOffer puts this node's shares of req's blob in escrow for member
// from, once its possession proof checks, and answers with the transfer.
// How many it offers follows the two nodes' priorities, unless this node
// is leaving the group or an admin is ejecting it (then all it holds), and
// never more than the requester wants. Shares put in escrow signal
// Escrowed (without blocking): if the settle never comes, Recover must run.
func (s *Service) answerOffer(from peer.ID, req request) (response, error) {
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
		escrow := s.escrowIn(req.Ref, req.Group)
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
}

// escrowIn lists the transfers of ref in group g in escrow here, as an
// admin about to eject this node is told them (nil if the ledger cannot
// say).
func (s *Service) escrowIn(ref syncnode.BlobRef, g syncnode.GroupID) []ownership.Transfer {
	var escrow []ownership.Transfer
	pending, _ := s.ledger.Pending(ref)
	for _, p := range pending {
		if p.Group == g {
			escrow = append(escrow, p)
		}
	}
	return escrow
}

// answerSettle settles the escrowed transfer req.ID as its acceptor from
// reports (accepted or not), and answers whether this node still keeps
// shares of the blob.
func (s *Service) answerSettle(from peer.ID, req request) (response, error) {
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
	if err == nil {
		s.signalSettled()
	}
	if err == nil && mine != nil {
		s.settled(*mine, req.Accepted)
	}
	return response{Keeps: keeps}, err
}

// answerAsk hands a member's request that this node take its shares of
// req's blob to the asked callback, waiting at most AskWait, and answers
// how many it took (or that the asker's are surplus).
func (s *Service) answerAsk(from peer.ID, req request) (response, error) {
	if _, ok := s.prio.PeerPriority(req.Group, from); !ok {
		return response{}, fmt.Errorf("%s is not a member of %s", from, req.Group)
	}
	if s.asked == nil {
		return response{}, errors.New("this node takes no blobs on request")
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.AskWait)
	defer cancel()
	res, err := s.asked(ctx, from, req.Ref, req.Group, req.Leaving)
	return response{Taken: res.Taken, Surplus: res.Surplus}, err
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
