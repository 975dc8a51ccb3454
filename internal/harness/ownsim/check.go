package ownsim

// The invariant checks of a run, and the wait for ownership to settle.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/syncnode/syncnode"
)

// state is what one member holds of one blob.
func (s *sim) state(m *member, ref syncnode.BlobRef) (bool, map[syncnode.GroupID]int, error) {
	if m.n == nil {
		return m.held[ref], m.shares[ref], nil
	}
	return m.n.Holding(ref)
}

// check verifies I1, I2 and I3 now. Reads of different nodes are not one
// instant: a count that breaks an invariant is read again a few times, and
// only one that stays broken fails.
func (s *sim) check() error {
	for _, b := range s.blobs {
		var err error
		for try := range 6 {
			if err = s.checkBlob(b); err == nil {
				break
			}
			time.Sleep(time.Duration(try+1) * 10 * time.Millisecond)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *sim) checkBlob(b *blob) error {
	copies, total := 0, 0
	for _, m := range s.ms {
		held, sh, err := s.state(m, b.ref)
		if err != nil {
			return err
		}
		if held {
			copies++
		}
		if !m.out {
			total += sh[s.g]
		}
		s.rep.Checks++
		restoring := m.n != nil && slices.Contains(m.n.Restoring(), b.ref)
		if sh[s.g] > 0 && !held && !restoring {
			return fmt.Errorf("I3: %s holds %d shares of blob %s and no copy", m.name, sh[s.g], b.ref)
		}
	}
	s.rep.Checks += 2
	if total > 2 {
		return fmt.Errorf("I2: blob %s has %d shares in the group; %s", b.ref, total, s.describe(b))
	}
	if b.row && copies > 0 && !b.again {
		b.protected = true
	}
	if b.protected && !b.unref && copies == 0 {
		return fmt.Errorf("I1: blob %s, referenced by a live row, has no copy left; %s", b.ref, s.describe(b))
	}
	return nil
}

// describe tells what every member holds of b, for a failure's message.
func (s *sim) describe(b *blob) string {
	var parts []string
	for _, m := range s.ms {
		held, sh, err := s.state(m, b.ref)
		d := fmt.Sprintf("%s: held %v, shares %d", m.name, held, sh[s.g])
		if err != nil {
			d += " (" + err.Error() + ")"
		}
		if m.n != nil {
			if row, ok, _ := m.n.GetRow(s.g, b.key()); ok {
				d += fmt.Sprintf(", row by %s #%d", s.nameOf(row.Writer), row.Seq)
			} else {
				d += ", no row"
			}
			if p, err := m.acc.Ledger.Pending(b.ref); err == nil && len(p) > 0 {
				d += fmt.Sprintf(", %d transfers in escrow", len(p))
			}
			if w, err := m.n.Why(b.ref); err == nil {
				if w.Handoff != "" {
					d += ", last hand-off: " + w.Handoff
				}
				if w.LastErr != "" {
					d += ", last fetch error: " + w.LastErr
				}
			}
		}
		parts = append(parts, d)
	}
	return "origin " + names[b.origin] + "; " + strings.Join(parts, "; ")
}

// settle heals the network, restarts every node and waits for every
// protected blob to be on the server with both shares and no device to
// hold shares of it (I6), checking I1–I3 along the way.
func (s *sim) settle(ctx context.Context) error {
	s.cut.Heal()
	if s.cfg.Faults != nil {
		s.cfg.Faults.CutReads(0)
		s.cfg.Faults.SetUnavailable(false)
	}
	for _, m := range s.ms {
		if m.n == nil {
			if err := s.start(m); err != nil {
				return err
			}
		}
	}
	for _, m := range s.ms {
		for try := 0; m.out; try++ {
			if try == 20 {
				return fmt.Errorf("settle: %s cannot join again", m.name)
			}
			s.log("settle: " + s.rejoin(ctx, m))
		}
	}
	s.log("settle: network healed, every node up and a member")
	deadline := time.Now().Add(s.cfg.Settle)
	for {
		if err := s.check(); err != nil {
			return err
		}
		why := s.unsettled()
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("I6: not settled after %s: %s", s.cfg.Settle, why)
		}
		for _, m := range s.ms {
			m.n.SyncNow(s.g)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unsettled says why the run has not settled, or "".
func (s *sim) unsettled() string {
	srv := s.ms[server].n
	for i, b := range s.blobs {
		if b.unref {
			if why := s.uncollected(i, b); why != "" {
				return why
			}
			continue
		}
		if !b.protected {
			continue
		}
		held, sh, err := srv.Holding(b.ref)
		if err != nil {
			return err.Error()
		}
		if !held || sh[s.g] != 2 {
			return fmt.Sprintf("blob %d: server holds it %v with %d shares; %s", i, held, sh[s.g], s.describe(b))
		}
		for _, m := range s.ms[:server] {
			if _, sh, _ := m.n.Holding(b.ref); sh[s.g] > 0 {
				return fmt.Sprintf("blob %d: %s still holds %d shares after the server's copy; %s", i, m.name, sh[s.g], s.describe(b))
			}
		}
	}
	return ""
}

// uncollected says which node still holds shares of a blob whose row
// names it no more, or the server a copy, or "".
func (s *sim) uncollected(i int, b *blob) string {
	for _, m := range s.ms {
		held, sh, err := m.n.Holding(b.ref)
		if err != nil {
			return err.Error()
		}
		if held && b.late && m.idx() == b.origin {
			held = false // put after its row went: a copy no row names
		}
		if held && m.idx() != server {
			held = false // a device's copy without shares: a cache its budget evicts
		}
		if held || sh[s.g] > 0 {
			return fmt.Sprintf("blob %d: its row is gone, and %s still holds it %v with %d shares; %s", i, m.name, held, sh[s.g], s.describe(b))
		}
	}
	return ""
}
