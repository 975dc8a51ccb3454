package featuretests

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/syncgroup"
)

// TestEjectionKeepsTheOnlyCopy: a server holds the only copy of the
// phone's blob and both its shares (the phone, over its budget, evicted
// it). When the admin ejects the server, it first fetches the blob from
// it and, the server out, keeps it with the group's two shares; the
// ejected server learns it is out and its shares pin nothing any more.
// With the only holder unreachable, the ejection is refused and names the
// blob; forced, it goes ahead and says what is at risk.
func TestEjectionKeepsTheOnlyCopy(t *testing.T) {
	t.Parallel()
	phone := start(t, func(c *node.Config) { c.BlobBudget = 1 << 20 })
	server := start(t)
	laptop := start(t, func(c *node.Config) { c.BlobBudget = 1 << 20 })
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, server, g, syncnode.Server)
	join(t, phone, laptop, g, syncnode.Normal)
	data := randomBytes(2<<20, 72)
	ref := putBlobRow(t, phone, g, "photos/only", data)
	waitFor(t, 30*time.Second, "the server's copy with both shares, the phone's evicted", func() bool {
		return server.HasBlob(ref) && shares(t, server, ref, g) == 2 && !phone.HasBlob(ref)
	})

	if err := phone.EjectMember(g, server.ID()); err != nil {
		t.Fatalf("ejecting the server: %v", err)
	}
	if !phone.HasBlob(ref) || shares(t, phone, ref, g) != 2 {
		t.Fatalf("after the ejection the admin holds the blob %v with %d shares", phone.HasBlob(ref), shares(t, phone, ref, g))
	}
	if !bytes.Equal(readAll(t, phone, ref), data) {
		t.Fatal("the admin's copy differs")
	}
	waitFor(t, 10*time.Second, "the ejected server drops its shares", func() bool { return shares(t, server, ref, g) == 0 })
	// The laptop, a member that stays, reads it from the admin.
	if _, err := laptop.FetchBlob(t.Context(), ref, node.FetchOptions{}); err != nil {
		t.Fatalf("the laptop's fetch after the ejection: %v", err)
	}

	// A second blob, the laptop's, no server left to take it: the laptop
	// keeps it with its creator's shares. Once the laptop is unreachable,
	// ejecting it is refused: what it keeps cannot be checked. Forced, it
	// goes ahead and names the blob it knows is at risk.
	second := randomBytes(2<<20, 73)
	ref2 := putBlobRow(t, laptop, g, "photos/second", second)
	waitFor(t, 10*time.Second, "the admin sees the laptop's row", func() bool {
		_, ok, err := phone.GetRow(g, "photos/second")
		return ok && err == nil
	})
	other := laptop
	other.Close()
	if _, err := phone.EjectMemberWith(t.Context(), g, other.ID(), node.EjectOptions{}); !errors.Is(err, node.ErrAtRisk) {
		t.Fatalf("ejecting the unreachable only holder: %v", err)
	}
	if !isMember(phone, g, other) {
		t.Fatal("the refused ejection ejected")
	}
	e, err := phone.EjectMemberWith(t.Context(), g, other.ID(), node.EjectOptions{Force: true})
	if err != nil || !slices.Equal(e.Held, []syncnode.BlobRef{ref2}) || !slices.Contains(e.AtRisk, ref2) {
		t.Fatalf("a forced ejection: %v, %+v", err, e)
	}
	if isMember(phone, g, other) {
		t.Fatal("the forced ejection did not eject")
	}
}

// isMember reports whether p is a member of g as n knows it.
func isMember(n *node.Node, g syncnode.GroupID, p *node.Node) bool {
	return slices.ContainsFunc(n.Members(g), func(m syncgroup.Member) bool { return m.Peer == p.ID() })
}

// TestSharesReturningToAnEjectedMemberAreDropped: a member has two blobs'
// shares in escrow when the admin ejects it, one transfer to the admin,
// one to a tablet that is down. The member ends the first before it
// answers the admin, which then takes those shares; the second stays in
// escrow and the tablet does not answer the admin either, so the
// ejection is refused, naming the blob. Forced, the admin makes up for
// its shares once the member is out. When the tablet is back, never
// having accepted, the shares that return to the ejected member pin
// nothing there: the group counts two of each.
func TestSharesReturningToAnEjectedMemberAreDropped(t *testing.T) {
	t.Parallel()
	phone := start(t)
	laptopCfg, tabletCfg := config(t, t.TempDir()), config(t, t.TempDir())
	laptop, tablet := open(t, laptopCfg), open(t, tabletCfg)
	t.Cleanup(func() { laptop.Close(); tablet.Close() })
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, laptop, g, syncnode.Normal)
	join(t, phone, tablet, g, syncnode.Normal)
	toAdmin := putBlobRow(t, laptop, g, "photos/a", randomBytes(1<<20, 74))
	toTablet := putBlobRow(t, laptop, g, "photos/b", randomBytes(1<<20, 75))
	waitFor(t, 10*time.Second, "the laptop knows the tablet", func() bool { return len(laptop.Members(g)) == 3 })
	if _, err := nodetest.Ledger(laptop).OfferAll(ownership.NewTransferID(), toAdmin, g, phone.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := nodetest.Ledger(laptop).OfferAll(ownership.NewTransferID(), toTablet, g, tablet.ID()); err != nil {
		t.Fatal(err)
	}
	tablet.Close()
	e, err := phone.EjectMemberWith(t.Context(), g, laptop.ID(), node.EjectOptions{})
	if !errors.Is(err, node.ErrAtRisk) || !slices.Equal(e.AtRisk, []syncnode.BlobRef{toTablet}) {
		t.Fatalf("ejecting the laptop, its shares in escrow with a tablet that does not answer: %+v, %v", e, err)
	}
	if n := shares(t, phone, toAdmin, g); n != 2 {
		t.Fatalf("the admin holds %d shares of the blob whose escrow the laptop ended", n)
	}
	e, err = phone.EjectMemberWith(t.Context(), g, laptop.ID(), node.EjectOptions{Force: true})
	if err != nil || !slices.Contains(e.Kept, toTablet) {
		t.Fatalf("ejecting the laptop with force: %+v, %v", e, err)
	}
	for _, ref := range []syncnode.BlobRef{toAdmin, toTablet} {
		if n := shares(t, phone, ref, g); n != 2 {
			t.Fatalf("the admin holds %d shares of %s after the ejection", n, ref)
		}
	}
	if n := shares(t, laptop, toAdmin, g); n != 0 {
		t.Fatalf("the ejected laptop counts %d shares of the blob the admin took", n)
	}
	// The tablet back, the laptop (restarted) ends the transfer still in
	// escrow: never accepted.
	waitFor(t, 10*time.Second, "the laptop learns it is out", func() bool {
		_, err := laptop.PutRow(g, "photos/late", []byte{0xc0})
		return errors.Is(err, syncgroup.ErrNotMember)
	})
	tablet = open(t, tabletCfg)
	laptop.Close()
	laptop = open(t, laptopCfg)
	waitFor(t, 10*time.Second, "the transfer ended and the shares back on the laptop dropped", func() bool {
		p, err := nodetest.Ledger(laptop).Pending(toTablet)
		return err == nil && len(p) == 0 && shares(t, laptop, toTablet, g) == 0
	})
	if n := shares(t, tablet, toTablet, g); n != 0 {
		t.Fatalf("the tablet counts %d shares it never accepted", n)
	}
}

// TestForcedEjectionCountsWhatOthersKeep: a tablet that cannot be reached
// wrote a row naming the laptop's photo, which the laptop keeps with its
// two creator shares. Ejected by force, the tablet is taken for a holder
// of the photo (it wrote a row naming it): the admin fetches it, and makes
// up only for what the members that stay do not keep — here nothing.
func TestForcedEjectionCountsWhatOthersKeep(t *testing.T) {
	t.Parallel()
	phone := start(t)
	laptop, tablet := start(t), start(t)
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, laptop, g, syncnode.Normal)
	join(t, phone, tablet, g, syncnode.Normal)
	ref := putBlobRow(t, laptop, g, "photos/mine", randomBytes(512<<10, 78))
	v, err := msgpack.Marshal(map[string]any{"photo": ref})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tablet.PutRow(g, "photos/seen", v); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the admin knows both rows", func() bool {
		_, a, _ := phone.GetRow(g, "photos/mine")
		_, b, _ := phone.GetRow(g, "photos/seen")
		return a && b
	})
	tablet.Close()
	e, err := phone.EjectMemberWith(t.Context(), g, tablet.ID(), node.EjectOptions{Force: true})
	if err != nil {
		t.Fatalf("the forced ejection: %+v, %v", e, err)
	}
	if n := totalShares(t, []*node.Node{phone, laptop}, ref, g); n != 2 {
		t.Fatalf("after the forced ejection the members that stay hold %d shares of the laptop's photo (admin %d, laptop %d)",
			n, shares(t, phone, ref, g), shares(t, laptop, ref, g))
	}
}
