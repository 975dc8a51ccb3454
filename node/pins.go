package node

import (
	"context"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/holds"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/internal/shares"
)

// ErrUserPinned reports a blob that cannot be removed because the user
// pinned it here (PinBlob): UnpinBlob first, or remove it with
// RemoveOptions.Force.
var ErrUserPinned = holds.ErrUserPinned

// PinBlob keeps ref here for the user, whatever the device's budget:
// eviction never drops the copy until UnpinBlob (the budget may then be
// exceeded; Evict's report says by how much the user's pins hold). No
// ownership share moves and none is counted: a pin is this device's
// affair. The pin is on stable storage when PinBlob returns, and outlives
// restarts and power cuts; a pinned blob whose copy is lost or found
// damaged is fetched again.
//
// A blob not held is fetched first, from the peers that hold it, every
// byte verified (it is pinned before the fetch begins, so that a device
// over its budget cannot evict it as it lands); if the fetch fails, the
// pin is dropped again and the error returned. The fetch waits up to a
// minute for a holder that the blob's signpost names and that cannot be
// reached now (restarting, say); a blob no signpost names fails at once
// unless the DHT finds a holder.
func (n *Node) PinBlob(ctx context.Context, ref syncnode.BlobRef) error {
	ctx, done, err := n.call(ctx)
	if err != nil {
		return err
	}
	defer done()
	return n.keeper().Pin(ctx, ref)
}

// UnpinBlob drops the user's pin of ref, on stable storage when it
// returns; a blob not pinned is left as it is. The copy is then as any
// other: shares and work in progress still keep it, and over the budget
// it may be evicted.
func (n *Node) UnpinBlob(ref syncnode.BlobRef) error {
	_, done, err := n.call(context.Background())
	if err != nil {
		return err
	}
	defer done()
	if _, err := n.keeper().Unpin(ref); err != nil {
		return err
	}
	n.custody.EvictSoon()
	return nil
}

// Pinned reports whether the user pinned ref here.
func (n *Node) Pinned(ref syncnode.BlobRef) bool {
	ok, _ := n.custody.UserPinned(ref)
	return ok
}

// ListPins returns the blobs the user pinned here, held or being fetched
// again, in ref order.
func (n *Node) ListPins() []syncnode.BlobRef { return n.custody.UserPins() }

// RemoveOptions modify RemoveBlobWith.
type RemoveOptions struct {
	// Force removes a blob the user pinned here, dropping the pin first.
	// It never overrides ownership shares, a reclaim or work in progress.
	Force bool
}

// HoldKind names what keeps a blob here.
type HoldKind = holds.Kind

// What can keep a blob from being removed (see package holds).
const (
	HoldShares    = holds.Shares
	HoldEscrow    = holds.Escrow
	HoldRecovered = holds.Recovered
	HoldWork      = holds.Work
	HoldUser      = holds.User
)

// Hold is one thing that keeps a blob here, and what would release it.
type Hold = holds.Hold

// HeldError is RemoveBlob's refusal: each hold that keeps the blob here
// and what would release it. errors.Is matches ErrPinned when shares
// (held or in escrow), a reclaim or work in progress hold it, and
// ErrUserPinned when the user pinned it.
type HeldError = holds.Error

// removeSettleWait is how long RemoveBlob waits for the settle of shares
// in escrow, which follows the acceptance at once, before it asks the
// acceptor how the transfer ended.
const removeSettleWait = 2 * time.Second

// RemoveBlobWith deletes a stored blob, as RemoveBlob, unless something
// keeps it here: then the error is a *HeldError naming each hold and what
// would release it (see HeldError for the sentinels it matches), and the
// blob stays. o.Force removes a blob the user pinned, dropping the pin.
//
// Shares this node offered to a member are in escrow until the member
// settles the transfer, a moment after it accepts: until then BlobShares
// shows none, yet they hold the copy. RemoveBlobWith waits for that
// settle first, briefly, and then asks the member how the transfer
// ended: right after a server took the shares, the removal succeeds.
func (n *Node) RemoveBlobWith(ref syncnode.BlobRef, o RemoveOptions) error {
	ctx, done, err := n.call(context.Background())
	if err != nil {
		return err
	}
	defer done()
	return n.keeper().Remove(ctx, ref, o.Force)
}

// keeper removes, pins and unpins blobs.
func (n *Node) keeper() holds.Keeper {
	wait := n.cfg.EscrowWait
	if wait <= 0 {
		wait = shares.DefaultEscrowWait
	}
	return holds.Keeper{Ledger: n.ledger, Custody: n.custody, Wanted: custodyRules{n}.Wanted, Holds: n.holds, Grant: n.handoffs.GrantHeld,
		Known: func(ref syncnode.BlobRef) bool {
			sp, err := n.signposts.Get(ref)
			return err == nil && len(sp.Locations) > 0
		},
		Fetch: func(ctx context.Context, ref syncnode.BlobRef, wait time.Duration) error {
			_, err := n.retr.Fetch(ctx, ref, retrieval.Request{Urgency: UrgencyHigh, WaitForHolder: wait})
			return err
		},
		Names: n.names(),
		Short: func(ctx context.Context, ref syncnode.BlobRef) ([]holds.Shortfall, error) {
			return n.handoffs.CopiesShort(ctx, ref, true)
		},
		Settle: func(ctx context.Context, ref syncnode.BlobRef, wait time.Duration) error {
			_, err := n.handoffs.Shares().SettleEscrow(ctx, ref, wait)
			return err
		},
		EscrowWait: wait, SettleWait: removeSettleWait, IOTimeout: n.cfg.IOTimeout, Log: n.log}
}

// names names groups and peers in errors.
func (n *Node) names() holds.GroupNames {
	return holds.GroupNames{Groups: n.sync, Self: n.h.ID(), NameFunc: n.peerName}
}
