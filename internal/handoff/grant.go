package handoff

import (
	"errors"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/ownership"
)

// withCopy runs fn with ref locked against deletion, held saying whether
// this node holds it verified.
func (h *Handoffs) withCopy(ref syncnode.BlobRef, fn func(held bool) error) error {
	unlock := h.copies.Lock(ref)
	defer unlock()
	return fn(h.holds(ref))
}

// GrantCreator grants this node the creator's shares of ref in each of
// groups it is a member of, if it holds the blob: as the blob's origin in
// every group, otherwise only in the groups where introduced says its own
// row brought the ref in. It runs whichever comes second, the row or the
// bytes, and again at open, so the origin's copy is pinned before any
// signpost makes it evictable. It reports whether this node holds ref.
func (h *Handoffs) GrantCreator(ref syncnode.BlobRef, groups []syncnode.GroupID, introduced func(syncnode.GroupID) bool) (bool, error) {
	held := false
	err := h.withCopy(ref, func(holds bool) error {
		if held = holds; !held {
			return nil
		}
		var errs []error
		for _, g := range groups {
			if !h.groups.IsMember(h.self, g) {
				continue
			}
			granted, err := h.ledger.GrantCreator(ref, g, introduced != nil && introduced(g))
			if err != nil {
				errs = append(errs, err)
			}
			if granted {
				h.log.Info("creator shares granted", "blob", ref, "group", g)
				h.moved(ref, g, "", ownership.CreatorShares, true)
			}
		}
		if rec, err := h.ledger.Recovered(ref); err == nil && rec {
			h.reclaims.add(ref)
		}
		return errors.Join(errs...)
	})
	return held, err
}

// GrantHeld grants the creator's shares of a held blob in the groups its
// signpost names: after a put, before a removal, and for every held blob
// after an open, since a stop may fall between storing the bytes and
// granting.
func (h *Handoffs) GrantHeld(ref syncnode.BlobRef) error {
	sp, err := h.book.Get(ref)
	if errors.Is(err, syncnode.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = h.GrantCreator(ref, sp.Groups(), nil)
	return err
}

// CheckShares reports the shares of blobs with no verified copy here (I3
// broken by a lost or damaged copy) and restores the copies.
func (h *Handoffs) CheckShares() error {
	return h.ledger.Scan(func(ref syncnode.BlobRef, sh map[syncnode.GroupID]int) error {
		if !h.holds(ref) {
			h.log.Error("shares held without a verified copy; restoring the copy", "blob", ref, "shares", sh)
			h.copies.Restore(ref)
		}
		return nil
	})
}

// Holding returns, consistently, whether this node holds ref verified and
// its shares of it by group: both are read under the lock that deleting a
// copy and accepting shares take, so they describe one instant.
func (h *Handoffs) Holding(ref syncnode.BlobRef) (held bool, shares map[syncnode.GroupID]int, err error) {
	err = h.withCopy(ref, func(ok bool) error {
		held = ok
		var err error
		shares, err = h.ledger.Shares(ref)
		return err
	})
	return held, shares, err
}
