package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/internal/shares"
)

// ErrUserPinned reports a blob that cannot be removed because the user
// pinned it here (PinBlob): UnpinBlob first, or remove it with
// RemoveOptions.Force.
var ErrUserPinned = errors.New("node: blob is pinned here by the user")

// pinFetchWait is how long PinBlob's fetch of a blob not held waits for
// a holder that its signpost names and that cannot be reached now to come
// back, as `blob get` does.
const pinFetchWait = time.Minute

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
	had, _ := n.custody.UserPinned(ref)
	// Under the blob's lock, which eviction holds from its last check to
	// the deletion: a copy seen held here stays.
	unlock := n.custody.Lock(ref)
	err = n.custody.UserPin(ref)
	held := err == nil && n.holds(ref)
	unlock()
	if err != nil {
		return err
	}
	if held {
		return nil
	}
	var wait time.Duration
	if sp, err := n.signposts.Get(ref); err == nil && len(sp.Locations) > 0 {
		wait = pinFetchWait
	}
	_, err = n.retr.Fetch(ctx, ref, retrieval.Request{Urgency: UrgencyHigh, WaitForHolder: wait})
	if err == nil {
		n.custody.Restored(ref)
		return nil
	}
	if !had {
		if _, uerr := n.custody.UserUnpin(ref); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}
	return fmt.Errorf("node: pin %s: not held here, and the fetch failed: %w", ref, err)
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
	if _, err := n.custody.UserUnpin(ref); err != nil {
		return err
	}
	if !(custodyRules{n}).Wanted(ref) {
		n.custody.Restored(ref) // a lost copy no longer comes back for the pin
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
type HoldKind string

// What can keep a blob from being removed.
const (
	// HoldShares: this node holds ownership shares of it in a group.
	HoldShares HoldKind = "shares"
	// HoldEscrow: shares offered to a member that has not settled the
	// transfer (it did not answer).
	HoldEscrow HoldKind = "escrow"
	// HoldRecovered: held when this node's database was lost; kept until
	// the group's members say who keeps its shares.
	HoldRecovered HoldKind = "recovered"
	// HoldWork: work in progress needs the copy (shares being taken or
	// handed off, a fetch for an ejection).
	HoldWork HoldKind = "work"
	// HoldUser: the user pinned it here.
	HoldUser HoldKind = "user"
)

// Hold is one thing that keeps a blob here.
type Hold struct {
	Kind HoldKind
	// Group and Shares are the group and the share count, for shares held
	// or in escrow; Peer, for shares in escrow, the member they were
	// offered to.
	Group  syncnode.GroupID
	Shares int
	Peer   peer.ID
	// What says what holds the blob; Release what would release it.
	What, Release string
}

// HeldError is RemoveBlob's refusal: each hold that keeps the blob here
// and what would release it. errors.Is matches ErrPinned when shares
// (held or in escrow), a reclaim or work in progress hold it, and
// ErrUserPinned when the user pinned it.
type HeldError struct {
	Ref   syncnode.BlobRef
	Holds []Hold
}

func (e *HeldError) Error() string {
	parts := make([]string, len(e.Holds))
	for i, h := range e.Holds {
		parts[i] = h.What + ": " + h.Release
	}
	return fmt.Sprintf("node: blob %s is held here: %s", e.Ref, strings.Join(parts, "; "))
}

// Is matches ErrPinned and ErrUserPinned by the holds.
func (e *HeldError) Is(target error) bool {
	for _, h := range e.Holds {
		switch {
		case target == ErrUserPinned && h.Kind == HoldUser:
			return true
		case target == ErrPinned && h.Kind != HoldUser:
			return true
		}
	}
	return false
}

// only reports whether every hold is of kind k.
func (e *HeldError) only(k HoldKind) bool {
	for _, h := range e.Holds {
		if h.Kind != k {
			return false
		}
	}
	return true
}

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
	if pending, err := n.ledger.Pending(ref); err == nil && len(pending) > 0 {
		sctx, cancel := context.WithTimeout(ctx, removeSettleWait+n.cfg.IOTimeout)
		if _, err := n.handoffs.Shares().SettleEscrow(sctx, ref, removeSettleWait); err != nil {
			n.log.Warn("shares in escrow not settled before a removal", "blob", ref, "err", err)
		}
		cancel()
	}
	unlock := n.custody.Lock(ref)
	defer unlock()
	held, err := n.holdsOf(ref)
	if err != nil {
		return err
	}
	unpinned := false
	if held != nil {
		if !o.Force || !held.only(HoldUser) {
			return held
		}
		if unpinned, err = n.custody.UserUnpin(ref); err != nil {
			return err
		}
		if !(custodyRules{n}).Wanted(ref) {
			n.custody.Restored(ref)
		}
	}
	err = n.custody.Delete(ref)
	if unpinned && errors.Is(err, syncnode.ErrNotFound) {
		return nil // pinned, not held (being fetched again): the pin was all
	}
	return err
}

// holdsOf returns what keeps ref here, nil if nothing does. The caller
// holds ref's lock.
func (n *Node) holdsOf(ref syncnode.BlobRef) (*HeldError, error) {
	e := &HeldError{Ref: ref}
	sh, err := n.ledger.Shares(ref)
	if err != nil {
		return nil, err
	}
	pending, err := n.ledger.Pending(ref)
	if err != nil {
		return nil, err
	}
	recovered, err := n.ledger.Recovered(ref)
	if err != nil {
		return nil, err
	}
	for _, g := range sortedGroups(sh) {
		if sh[g] <= 0 {
			continue
		}
		e.Holds = append(e.Holds, Hold{Kind: HoldShares, Group: g, Shares: sh[g],
			What: fmt.Sprintf("%s in group %s", sharesWord(sh[g]), n.groupName(g)), Release: n.sharesRelease(g)})
	}
	for _, t := range pending {
		e.Holds = append(e.Holds, Hold{Kind: HoldEscrow, Group: t.Group, Shares: t.N, Peer: t.To,
			What:    fmt.Sprintf("%s in group %s offered to %s, which has not settled the transfer", sharesWord(t.N), n.groupName(t.Group), n.peerName(t.To)),
			Release: fmt.Sprintf("it settles when that member answers again (after the escrow wait, %v, the shares come back here)", n.escrowWait())})
	}
	if recovered {
		e.Holds = append(e.Holds, Hold{Kind: HoldRecovered, What: "held when this node's database was lost",
			Release: "kept until the members of its groups say who keeps its shares (they are asked in the background)"})
	}
	if n.custody.Pinned(ref) {
		e.Holds = append(e.Holds, Hold{Kind: HoldWork, What: "a share transfer or an ejection in progress needs the copy",
			Release: "try again once that ends"})
	}
	if ok, _ := n.custody.UserPinned(ref); ok {
		e.Holds = append(e.Holds, Hold{Kind: HoldUser, What: "pinned here",
			Release: fmt.Sprintf("`syncnode blob unpin %s` (or `syncnode blob rm -force %s`, which unpins and removes)", ref, ref)})
	}
	// Shares of a group no longer counted (the ledger's own rule decides)
	// hold nothing; what MayEvict refuses is named above.
	if ok, err := n.ledger.MayEvict(ref); err != nil {
		return nil, err
	} else if !ok && len(e.Holds) == 0 {
		e.Holds = append(e.Holds, Hold{Kind: HoldShares, What: "ownership shares", Release: "see `syncnode why " + ref.String() + "`"})
	}
	if len(e.Holds) == 0 {
		return nil, nil
	}
	return e, nil
}

// sharesRelease says what moves this node's shares in group g elsewhere.
func (n *Node) sharesRelease(g syncnode.GroupID) string {
	if dev, ok := n.DevType(g); ok && dev == syncnode.Server {
		return "this node is a server of the group, which keeps them: leave the group to hand them to another member"
	}
	servers := 0
	for _, m := range n.Members(g) {
		if m.DevType == syncnode.Server && m.Peer != n.h.ID() {
			servers++
		}
	}
	if servers == 0 {
		return "they move to a server of the group when one takes them, and the group has none (run a server, or leave the group)"
	}
	return fmt.Sprintf("they move to a server of the group when one takes them, after it fetched the blob (the group has %d; `syncnode why` shows the last hand-off)", servers)
}

// groupName names group g as its spec does, or by its ID.
func (n *Node) groupName(g syncnode.GroupID) string {
	if s, err := n.GroupSpec(g); err == nil && s.Name != "" {
		return s.Name
	}
	return string(g)
}

// escrowWait is how long shares wait in escrow for an acceptor.
func (n *Node) escrowWait() time.Duration {
	if n.cfg.EscrowWait > 0 {
		return n.cfg.EscrowWait
	}
	return shares.DefaultEscrowWait
}

func sharesWord(k int) string {
	if k == 1 {
		return "1 share"
	}
	return fmt.Sprintf("%d shares", k)
}

func sortedGroups(m map[syncnode.GroupID]int) []syncnode.GroupID {
	out := make([]syncnode.GroupID, 0, len(m))
	for g := range m {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}
