package holds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/syncgroup"
)

// Custody is the node's keeper of copies, as a removal uses it.
type Custody interface {
	// Lock takes ref's lock, which eviction holds from its last check to
	// the deletion.
	Lock(ref syncnode.BlobRef) (unlock func())
	// Pinned reports work in progress that needs the copy.
	Pinned(ref syncnode.BlobRef) bool
	UserPin(ref syncnode.BlobRef) error
	UserPinned(ref syncnode.BlobRef) (bool, time.Time)
	UserUnpin(ref syncnode.BlobRef) (bool, error)
	// Delete deletes the copy, ErrNotFound if there is none.
	Delete(ref syncnode.BlobRef) error
	// Restored ends the fetching again of a lost copy.
	Restored(ref syncnode.BlobRef)
}

// Keeper removes blobs that nothing holds and pins blobs for the user.
type Keeper struct {
	Ledger  Ledger
	Custody Custody
	Names   Names
	// Settle settles the shares of ref in escrow, waiting up to wait for
	// the member they were offered to.
	Settle func(ctx context.Context, ref syncnode.BlobRef, wait time.Duration) error
	// Wanted reports whether a copy of ref is wanted here apart from a
	// user's pin: a lost copy that is not is no longer fetched again.
	Wanted func(ref syncnode.BlobRef) bool
	// Holds reports a whole, verified copy of ref here.
	Holds func(ref syncnode.BlobRef) bool
	// Fetch fetches ref from the peers that hold it, waiting up to wait
	// for one that cannot be reached now.
	Fetch func(ctx context.Context, ref syncnode.BlobRef, wait time.Duration) error
	// Grant restores the creator's shares of a held blob that a stop cut
	// short: a removal asks first, whether or not the walk after the open
	// has reached the blob.
	Grant func(ref syncnode.BlobRef) error
	// Known reports a blob some signpost names holders of.
	Known func(ref syncnode.BlobRef) bool
	// Short returns the groups of ref that want more verified server
	// copies than the other servers say they hold when asked now.
	Short func(ctx context.Context, ref syncnode.BlobRef) ([]Shortfall, error)
	// EscrowWait is how long shares stay in escrow; SettleWait how long a
	// removal waits for a settle; IOTimeout bounds the question that
	// follows it.
	EscrowWait, SettleWait, IOTimeout time.Duration
	Log                               *slog.Logger
}

// Remove deletes the copy of ref unless something holds it: then the
// error is an *Error naming each hold and what would release it, and the
// copy stays. With force, a copy only the user's pin holds is unpinned
// and deleted.
//
// Shares offered to a member are in escrow until the member settles the
// transfer, a moment after it accepts: until then the ledger shows none,
// yet they hold the copy. Remove waits for that settle first, briefly,
// and then asks the member how the transfer ended: right after a server
// took the shares, the removal succeeds.
func (r Keeper) Remove(ctx context.Context, ref syncnode.BlobRef, force bool) error {
	if err := r.Grant(ref); err != nil {
		return err
	}
	if pending, err := r.Ledger.Pending(ref); err == nil && len(pending) > 0 {
		sctx, cancel := context.WithTimeout(ctx, r.SettleWait+r.IOTimeout)
		if err := r.Settle(sctx, ref, r.SettleWait); err != nil {
			r.Log.Warn("shares in escrow not settled before a removal", "blob", ref, "err", err)
		}
		cancel()
	}
	var short []Shortfall
	if r.Short != nil && r.Holds(ref) {
		var err error
		if short, err = r.Short(ctx, ref); err != nil {
			return err
		}
	}
	unlock := r.Custody.Lock(ref)
	defer unlock()
	user, _ := r.Custody.UserPinned(ref)
	held, err := Of(ref, r.Ledger, r.Names, Facts{Work: r.Custody.Pinned(ref), User: user, EscrowWait: r.EscrowWait, Short: short})
	if err != nil {
		return err
	}
	unpinned := false
	if held != nil {
		if !force || !held.Only(User) {
			return held
		}
		if unpinned, err = r.Unpin(ref); err != nil {
			return err
		}
	}
	err = r.Custody.Delete(ref)
	if unpinned && errors.Is(err, syncnode.ErrNotFound) {
		return nil // pinned, not held (being fetched again): the pin was all
	}
	return err
}

// Unpin drops the user's pin of ref, if any, and reports whether there
// was one; a lost copy no longer wanted is then no longer fetched again.
func (r Keeper) Unpin(ref syncnode.BlobRef) (bool, error) {
	had, err := r.Custody.UserUnpin(ref)
	if err == nil && !r.Wanted(ref) {
		r.Custody.Restored(ref)
	}
	return had, err
}

// PinFetchWait is how long Pin's fetch of a blob not held waits for a
// holder that the blob's signpost names and that cannot be reached now
// to come back, as `blob get` does.
const PinFetchWait = time.Minute

// Pin keeps ref here for the user (see node.Node.PinBlob): a blob not
// held is pinned first, so that eviction cannot drop it as it lands, and
// then fetched; if the fetch fails, a pin made here is dropped again.
func (r Keeper) Pin(ctx context.Context, ref syncnode.BlobRef) error {
	had, _ := r.Custody.UserPinned(ref)
	// Under the blob's lock, which eviction holds from its last check to
	// the deletion: a copy seen held here stays.
	unlock := r.Custody.Lock(ref)
	err := r.Custody.UserPin(ref)
	held := err == nil && r.Holds(ref)
	unlock()
	if err != nil || held {
		return err
	}
	var wait time.Duration
	if r.Known(ref) {
		wait = PinFetchWait
	}
	if err = r.Fetch(ctx, ref, wait); err == nil {
		r.Custody.Restored(ref)
		return nil
	}
	if !had {
		if _, uerr := r.Custody.UserUnpin(ref); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}
	return fmt.Errorf("node: pin %s: not held here, and the fetch failed: %w", ref, err)
}

// Groups is what a node's groups say of their specs and members.
type Groups interface {
	Spec(g syncnode.GroupID) (syncgroup.Spec, error)
	Members(g syncnode.GroupID) []syncgroup.Member
}

// GroupNames are Names read from a node's groups: self is the node, and
// PeerName names a peer.
type GroupNames struct {
	Groups   Groups
	Self     peer.ID
	NameFunc func(peer.ID) string
}

// GroupName returns g's name, or its ID.
func (n GroupNames) GroupName(g syncnode.GroupID) string {
	if s, err := n.Groups.Spec(g); err == nil && s.Name != "" {
		return s.Name
	}
	return string(g)
}

// PeerName names p.
func (n GroupNames) PeerName(p peer.ID) string { return n.NameFunc(p) }

// AskAdmins names the admins of a group, for a refusal to say whom to
// ask: " (ask A, B or C)", or "" with none.
func (n GroupNames) AskAdmins(spec syncgroup.Spec) string {
	names := make([]string, len(spec.Admins))
	for i, a := range spec.Admins {
		names[i] = n.PeerName(a)
	}
	switch len(names) {
	case 0:
		return ""
	case 1:
		return " (ask " + names[0] + ")"
	}
	return " (ask " + strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1] + ")"
}

// Servers reports whether this node is a server of g, and how many other
// servers g has.
func (n GroupNames) Servers(g syncnode.GroupID) (self bool, others int) {
	for _, m := range n.Groups.Members(g) {
		switch {
		case m.DevType != syncnode.Server:
		case m.Peer == n.Self:
			self = true
		default:
			others++
		}
	}
	return self, others
}
