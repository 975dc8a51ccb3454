package shares

import (
	"context"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/ownership"
)

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
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.IOTimeout)
		resp, err := s.call(ctx, t.To, request{Op: opResolve, ID: t.ID, Ref: t.Ref}, s.cfg.IOTimeout)
		cancel()
		if err != nil {
			continue
		}
		if _, err := s.ledger.Settle(t.Ref, t.ID, resp.Accepted); err == nil {
			s.signalSettled()
			s.settled(t, resp.Accepted)
		}
	}
}

// settledSignal returns a channel closed at the next settle here.
func (s *Service) settledSignal() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.settleSig == nil {
		s.settleSig = make(chan struct{})
	}
	return s.settleSig
}

// signalSettled tells those waiting that a transfer settled here.
func (s *Service) signalSettled() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.settleSig != nil {
		close(s.settleSig)
		s.settleSig = nil
	}
}

// SettleEscrow ends the transfers of ref that wait in escrow here, as a
// node about to drop its copy must: shares offered to a member are out of
// this node's count at once (Ledger.Shares shows none), yet they hold the
// copy until the member settles, a moment after it accepts. It waits up
// to wait for those settles, then asks each acceptor that has not settled
// how its transfer ended (which fixes the outcome there: one not accepted
// yet never will be) and settles by the answer: accepted, the shares are
// the acceptor's; refused, they are back here. It returns the transfers
// still in escrow, whose acceptors did not answer.
func (s *Service) SettleEscrow(ctx context.Context, ref syncnode.BlobRef, wait time.Duration) ([]ownership.Transfer, error) {
	pending, err := s.awaitSettles(ctx, ref, wait)
	if err != nil || len(pending) == 0 {
		return pending, err
	}
	var left []ownership.Transfer
	for _, t := range pending {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.IOTimeout)
		resp, err := s.call(rctx, t.To, request{Op: opResolve, ID: t.ID, Ref: t.Ref}, s.cfg.IOTimeout)
		cancel()
		if err != nil {
			s.log.Info("a transfer in escrow was not resolved: its acceptor does not answer", "blob", ref, "group", t.Group, "acceptor", t.To, "err", err)
			left = append(left, t)
			continue
		}
		if _, err := s.ledger.Settle(t.Ref, t.ID, resp.Accepted); err != nil {
			return append(left, t), err
		}
		s.signalSettled()
		s.settled(t, resp.Accepted)
	}
	return left, nil
}

// awaitSettles waits until no transfer of ref is in escrow here, or wait
// has passed, or ctx ends, and returns those still in escrow.
func (s *Service) awaitSettles(ctx context.Context, ref syncnode.BlobRef, wait time.Duration) ([]ownership.Transfer, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		// The signal first: a settle between the read and the wait is
		// not missed.
		sig := s.settledSignal()
		pending, err := s.ledger.Pending(ref)
		if err != nil || len(pending) == 0 {
			return pending, err
		}
		select {
		case <-sig:
		case <-timer.C:
			return pending, nil
		case <-ctx.Done():
			return pending, nil
		}
	}
}
