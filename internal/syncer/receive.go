package syncer

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

// receive applies the peer's batches and returns its version vector.
func (s *Syncer) receive(br *bufio.Reader, st network.Stream, r *replica, id syncnode.GroupID, from peer.ID) (syncgroup.VersionVector, error) {
	var vv syncgroup.VersionVector
	var applyErr error
	// stuck are the writers a row of which was refused for now: the
	// vector stays below it, so that it comes again.
	stuck := map[peer.ID]bool{}
	// The next batch is read and its signatures checked while this one
	// is applied.
	stop := make(chan struct{})
	defer close(stop)
	batches := s.readAhead(br, st, r, id, stop)
	for {
		v := <-batches
		if v.err != nil {
			return nil, v.err
		}
		b, forged := v.b, v.forged
		if b.VV != nil {
			vv = b.VV
		}
		if b.Prio != nil {
			r.mu.Lock()
			s.observePriority(r, from, *b.Prio)
			r.mu.Unlock()
		}
		// Signposts first: a reader that sees a row can fetch its blob.
		r.applying.Lock()
		if len(b.Signposts) > 0 {
			r.mu.Lock()
			newer := winners(r.g, b.Rows)
			r.mu.Unlock()
			if sps := signpostsFor(b.Signposts, newer); len(sps) > 0 {
				s.hooks.Learn(from, id, sps)
			}
		}
		won, bad, err := s.apply(r, id, b.Rows, func(g *syncgroup.Group, held map[peer.ID]bool) {
			maps.Copy(stuck, held)
			if b.Done && vv != nil {
				vouch := vouches(g, from)
				g.Rows().LearnedFor(vv, func(w peer.ID) bool { return !stuck[w] && (vouch == nil || vouch(w)) })
			}
		}, b.Done)
		r.applying.Unlock()
		applyErr = errors.Join(applyErr, forged, bad)
		if err != nil {
			return nil, err
		}
		if len(won) > 0 {
			s.settle(id, won)
			s.learnMemberAddrs(r, won)
			s.hooks.Applied(id, won, from)
			// A few rows new here are news to others too (a write that a
			// push missed, a side of a healed partition): they travel on
			// as pushes do. A long catch-up does not.
			if len(won) <= maxRelayFromRound {
				s.spread(id, won, from)
			}
		}
		if b.Done {
			if applyErr != nil {
				s.log.Warn("rows refused in sync", "group", id, "peer", from, "err", applyErr)
			}
			return vv, nil
		}
	}
}

// checked is a batch read in a round, its rows' signatures verified:
// forged joins the refusals of those that were not; err ends the round.
type checked struct {
	b      batch
	forged error
	err    error
}

// readAhead reads the batches of a round on st one ahead of their
// application: each is checked (rows held already dropped, then
// signatures once, on every core, before the group is locked) while the
// one before is applied. It ends after the last batch, a failure, or
// stop.
func (s *Syncer) readAhead(br *bufio.Reader, st network.Stream, r *replica, id syncnode.GroupID, stop <-chan struct{}) <-chan checked {
	out := make(chan checked, 1)
	go func() {
		for {
			var c checked
			if err := p2p.ReadMsg(br, st, &c.b, p2p.MaxFrame, s.cfg.IOTimeout); err != nil {
				c.err = err
			} else if c.b.Err != "" {
				c.err = fmt.Errorf("%w: %s", ErrRefused, c.b.Err)
			} else {
				// Rows held already (another round or a push brought
				// them meanwhile) need no second check.
				r.mu.Lock()
				fresh := slices.DeleteFunc(c.b.Rows, r.g.Rows().Known)
				r.mu.Unlock()
				c.b.Rows, c.forged = s.checkSigs(id, fresh)
			}
			select {
			case out <- c:
			case <-stop:
				return
			}
			if c.err != nil || c.b.Done {
				return
			}
		}
	}()
	return out
}

// apply checks rows of group id from a peer, whose signatures checkSigs
// verified, and applies them under r's lock, then runs then (if not nil,
// with the writers refused for now) and stores the winners (and the whole
// replica state if always). bad joins the refusals; err is a
// failure to store.
func (s *Syncer) apply(r *replica, id syncnode.GroupID, rows []syncgroup.Row, then func(g *syncgroup.Group, stuck map[peer.ID]bool), always bool) (won []syncgroup.Row, bad, err error) {
	// Membership first (it admits the writers of the rest), then each
	// writer's rows in the order it wrote them: the vector moves over
	// every run of a writer's sequence that arrives whole, with no peer's
	// word needed for it.
	rows = syncgroup.ApplyOrder(rows)
	// The value limit binds every writer, not only this node's own: a
	// member cannot make the others hold what it could not write here.
	verified := make([]error, len(rows))
	for i, row := range rows {
		if len(row.Value) > MaxValue {
			verified[i] = fmt.Errorf("%w: %q from %s is %d bytes, at most %d", ErrTooLarge, row.Key, row.Writer, len(row.Value), MaxValue)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	stuck := map[peer.ID]bool{}
	for i, row := range rows {
		if verified[i] != nil {
			bad = errors.Join(bad, verified[i])
			continue
		}
		ok, err := r.g.ApplyVerified(row, time.Now())
		if err != nil {
			if errors.Is(err, syncgroup.ErrOverBudget) {
				s.refuse(row.Writer)
			}
			if retryable(err) {
				stuck[row.Writer] = true
			}
			bad = errors.Join(bad, err)
			continue
		}
		if ok {
			won = append(won, row)
		}
	}
	if then != nil {
		then(r.g, stuck)
	}
	if len(won) > 0 || always {
		err = s.save(r, won)
	}
	return won, bad, err
}

// checkSigs returns the rows whose writer's signature verifies (all of
// them with Config.trustRows), checked on every core, and the joined
// refusals of the others.
func (s *Syncer) checkSigs(id syncnode.GroupID, rows []syncgroup.Row) ([]syncgroup.Row, error) {
	if s.cfg.trustRows || len(rows) == 0 {
		return rows, nil
	}
	errs := syncgroup.VerifyRows(id, rows)
	if !slices.ContainsFunc(errs, func(err error) bool { return err != nil }) {
		return rows, nil
	}
	var good []syncgroup.Row
	var bad error
	for i, row := range rows {
		if errs[i] != nil {
			bad = errors.Join(bad, errs[i])
		} else {
			good = append(good, row)
		}
	}
	return good, bad
}
