package handoff

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
)

// haveWait bounds each question to another server in EnoughElsewhere.
const haveWait = 2 * time.Second

// full reports a server with no room left for another blob (Config.Room).
func (h *Handoffs) full() bool { return h.cfg.Room != nil && !h.cfg.Room() }

// Balanced reports whether this server may leave ref to others: it has no
// room left, and in every group ref was learned through, as many other
// servers as the group wants hold ref verified (those its signpost names
// on their own word, and those that say so when asked). When not, err
// says which server could not be asked: the answer may change once it
// can.
func (h *Handoffs) Balanced(ctx context.Context, ref syncnode.BlobRef) (bool, error) {
	if !h.full() {
		return false, nil
	}
	sp, err := h.book.Get(ref)
	if err != nil || len(sp.SgIDs) == 0 {
		return false, nil
	}
	var unasked error
	for _, g := range sp.Groups() {
		holders := map[peer.ID]bool{}
		for p, l := range sp.Locations {
			if l.IsServer && !l.IsProxy && p != h.self && h.book.IsServerMember(p, []syncnode.GroupID{g}) {
				holders[p] = true
			}
		}
		want := h.book.CopiesWanted(g)
		for _, m := range h.groups.Members(g) {
			if len(holders) >= want {
				break
			}
			if m.DevType != syncnode.Server || m.Peer == h.self || holders[m.Peer] {
				continue
			}
			hctx, cancel := context.WithTimeout(ctx, haveWait)
			r, err := h.fetch.Have(hctx, m.Peer, ref)
			cancel()
			if err == nil && r.Have {
				holders[m.Peer] = true
			} else if err != nil {
				unasked = fmt.Errorf("server %s not asked: %w", m.Peer, err)
			}
		}
		if len(holders) < want {
			return false, unasked
		}
	}
	return true, nil
}
