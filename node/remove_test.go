package node

import (
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/ownership"
)

// TestRemoveRightAfterTheServerTookTheShares: a device's blob is removed
// at the first try once its shares are gone from its count. They leave
// the count when the device offers them to the server, and the transfer
// settles a moment after the server accepts: a removal asked for in
// between (`blob stat` shows no shares, `blob rm` at once) was refused
// with ErrPinned and had to be retried.
func TestRemoveRightAfterTheServerTookTheShares(t *testing.T) {
	t.Parallel()
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Server)
	dev, srv := nodes[0], nodes[1]
	for i := range 4 {
		ref := putBlobRow(t, dev, g, "photos/rm"+string(rune('a'+i)), 64<<10, uint64(40+i))
		testkit.WaitFor(t, 20*time.Second, "the device's shares gone from its count", func() bool {
			sh, err := dev.BlobShares(ref)
			return err == nil && len(sh) == 0
		})
		if err := dev.RemoveBlob(ref); err != nil {
			t.Fatalf("blob %d: the first removal after the server took the shares failed: %v", i, err)
		}
		if dev.HasBlob(ref) || !srv.HasBlob(ref) || sharesIn(t, srv, ref, g) != ownership.CreatorShares {
			t.Fatalf("blob %d: device holds %v, server holds %v with %d shares", i, dev.HasBlob(ref), srv.HasBlob(ref), sharesIn(t, srv, ref, g))
		}
	}
}

// TestRemoveSettlesAnEscrowItsAcceptorAccepted: a member accepted the
// device's two shares and its settle has not come. The removal asks the
// member how the transfer ended, settles it, and removes the copy; the
// member keeps the shares. (Before, it was refused with ErrPinned though
// BlobShares showed none.)
func TestRemoveSettlesAnEscrowItsAcceptorAccepted(t *testing.T) {
	t.Parallel()
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal)
	a, b := nodes[0], nodes[1]
	ref := putBlobRow(t, a, g, "photos/escrow", 64<<10, 21)
	testkit.WaitFor(t, 10*time.Second, "the row at b", func() bool {
		sp, err := b.Signpost(ref)
		return err == nil && len(sp.Groups()) > 0
	})
	if _, err := fetchFrom(t.Context(), b, ref, a.ID()); err != nil {
		t.Fatal(err)
	}
	// a offers its shares to b, which accepts them; the settle is what
	// is missing, as right after a server took the shares.
	tr, err := a.ledger.OfferAll(ownership.NewTransferID(), ref, g, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	tr.From = a.ID()
	if err := b.ledger.Accept(tr, true); err != nil {
		t.Fatal(err)
	}
	if n := sharesIn(t, a, ref, g); n != 0 {
		t.Fatalf("a counts %d shares with its two in escrow", n)
	}
	if err := a.RemoveBlob(ref); err != nil {
		t.Fatalf("removal with the shares accepted by b and not settled: %v", err)
	}
	if pending, _ := a.ledger.Pending(ref); len(pending) != 0 || a.HasBlob(ref) {
		t.Fatalf("a: %d transfers in escrow, holds the blob: %v", len(pending), a.HasBlob(ref))
	}
	if got := totalShares(t, nodes, ref, g); got != ownership.CreatorShares || sharesIn(t, b, ref, g) != ownership.CreatorShares {
		t.Fatalf("shares: b %d, total %d", sharesIn(t, b, ref, g), got)
	}
}
