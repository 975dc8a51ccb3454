package syncer

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode/syncgroup"
)

// applyHello applies what a peer's hello brings of the membership, in
// the order each makes the next valid: its admission (a group from before
// the chain), the end of its chain (the change admitting a joiner the
// responder has not heard of yet), then its own membership row. Each is
// checked as any row is; a peer that is no member brings no change of its
// own. It saves and returns the rows that won. r.mu is held.
func (s *Syncer) applyHello(r *replica, h hello, from peer.ID) []syncgroup.Row {
	var rows []syncgroup.Row
	if h.Admission != nil && h.Admission.Key == syncgroup.AdmissionKey(from) {
		rows = append(rows, *h.Admission)
	}
	member := r.g.IsMember(from)
	for _, c := range h.Chain[:min(len(h.Chain), chainTail)] {
		if syncgroup.IsChainKey(c.Key) && !r.g.Rows().Known(c) && (member || c.Writer != from) {
			rows = append(rows, c)
		}
	}
	if h.Self != nil && h.Self.Writer == from {
		rows = append(rows, *h.Self)
	}
	var won []syncgroup.Row
	for _, row := range rows {
		if ok, err := r.g.Apply(row, time.Now()); err != nil {
			s.log.Info("membership from a hello refused", "group", h.Group, "peer", from, "key", row.Key, "err", err)
		} else if ok {
			won = append(won, row)
		}
	}
	if len(won) > 0 {
		if err := s.save(r, won); err != nil {
			s.log.Error("membership from a hello not stored", "group", h.Group, "peer", from, "err", err)
		}
	}
	return won
}
