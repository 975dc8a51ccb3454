package node

import (
	"bufio"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/internal/discovery"
	"github.com/syncnode/syncnode/internal/holds"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/p2p"
)

// TestDeviceKeepsItsCopyUntilKServersHoldIt: in a group that wants two
// server copies, a phone over its budget keeps its blob while only one
// server holds it — also once that server is gone — and lets it go once a
// second server holds it.
func TestDeviceKeepsItsCopyUntilKServersHoldIt(t *testing.T) {
	t.Parallel()
	pcfg := testConfig(t.TempDir())
	pcfg.BlobBudget = 1
	phone, err := Open(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()
	s1 := openNode(t, t.TempDir())
	defer s1.Close()
	s2dir := t.TempDir()
	s2 := openNode(t, s2dir)

	spec, err := phone.CreateGroupWith(GroupOptions{Name: "photos", Prefixes: []string{"photos/"}, Private: true, DevType: syncnode.Normal, Copies: 2})
	if err != nil {
		t.Fatal(err)
	}
	g := spec.ID
	join(t, phone, s1, g, syncnode.Server)
	join(t, phone, s2, g, syncnode.Server)
	testkit.WaitFor(t, 10*time.Second, "membership on every node", func() bool {
		return len(phone.Members(g)) == 3 && len(s1.Members(g)) == 3 && len(s2.Members(g)) == 3
	})
	if got, _ := s2.GroupSpec(g); got.ServerCopies() != 2 {
		t.Fatalf("a member's spec wants %d copies, want 2", got.ServerCopies())
	}
	s2.Close() // the second server is away

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	events := gatherEvents(ctx, t, phone, g, WatchOptions{Now: true})
	ref := putBlobRow(t, phone, g, "photos/1", 64<<10, 7)
	// The shares have left the phone once the transfer settled.
	events.next(t, "shares out", func(e Event) bool { return e.Kind == feed.SharesOut && e.Ref == ref && e.Peer == s1.ID() })
	if _, err := phone.Evict(); err != nil {
		t.Fatal(err)
	}
	if !phone.HasBlob(ref) {
		t.Fatal("the phone evicted its copy with one server copy of the two its group wants")
	}
	testkit.WaitFor(t, 10*time.Second, "why: one server copy of two", func() bool {
		why, err := phone.Why(ref)
		return err == nil && len(why.Copies) == 1 && why.Copies[0].Want == 2 && why.Copies[0].Known == 1
	})
	dur, _ := phone.Durability()
	if len(dur) != 1 || dur[0].AtRisk != 1 || dur[0].Copies != 2 {
		t.Fatalf("durability %+v: want the blob at risk with 2 copies wanted", dur)
	}

	s1.Close() // the only server copy is gone before a second was made
	if _, err := phone.Evict(); err != nil {
		t.Fatal(err)
	}
	if !phone.HasBlob(ref) {
		t.Fatal("the phone evicted its copy after the only server copy went away")
	}

	s2 = openNode(t, s2dir) // the second server comes back and fetches
	defer s2.Close()
	testkit.WaitFor(t, 30*time.Second, "the second server holds the blob", func() bool { return s2.HasBlob(ref) })
	deadline := time.Now().Add(30 * time.Second)
	for phone.HasBlob(ref) {
		if time.Now().After(deadline) {
			why, _ := phone.Why(ref)
			t.Fatalf("the phone kept its copy with two servers holding it: copies %+v", why.Copies)
		}
		phone.Evict()
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAChallengeFromADeviceNamesNoHolder: a member that is no server,
// speaking the share protocol itself, asks for a blob's shares it does not
// hold (a challenge is only its word): it does not become a holder in the
// owner's signpost, nor a copy that lets the owner evict.
func TestAChallengeFromADeviceNamesNoHolder(t *testing.T) {
	t.Parallel()
	nodes, g := meshWith(t, true, func(c *Config) { c.BlobBudget = 1 }, syncnode.Normal, syncnode.Normal)
	owner, liar := nodes[0], nodes[1]
	ref := putBlobRow(t, owner, g, "photos/1", 32<<10, 3)
	type challenge struct {
		Op    string               `msgpack:"o"`
		ID    ownership.TransferID `msgpack:"i"`
		Ref   syncnode.BlobRef     `msgpack:"r"`
		Group syncnode.GroupID     `msgpack:"g"`
	}
	err := p2p.Exchange(t.Context(), liar.h, owner.ID(), p2p.ProtoShares, func(st network.Stream) error {
		if err := p2p.WriteMsg(st, challenge{Op: "challenge", ID: ownership.NewTransferID(), Ref: ref, Group: g}, time.Second); err != nil {
			return err
		}
		var answer map[string]any
		return p2p.ReadMsg(bufio.NewReader(st), st, &answer, p2p.MaxFrame, time.Second)
	})
	if err != nil {
		t.Fatal(err)
	}
	why, err := owner.Why(ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range why.Locations {
		if l.Peer == liar.ID().String() {
			t.Fatalf("the device that asked without the blob is named a holder: %+v", l)
		}
	}
	owner.Evict()
	if !owner.HasBlob(ref) {
		t.Fatal("the owner evicted its only copy")
	}
}

// TestNoCopyRemovedBelowK: in a group that wants two server copies, with
// three servers holding a blob, one server loses its copy (its disk,
// under the node) and stays up. Every signpost still names it a holder,
// yet a second server may not remove its copy, which would leave one; nor
// may the phone remove its own while only one server answers that it
// holds the blob.
func TestNoCopyRemovedBelowK(t *testing.T) {
	t.Parallel()
	phone := openNode(t, t.TempDir())
	defer phone.Close()
	servers := []*Node{openNode(t, t.TempDir()), openNode(t, t.TempDir()), openNode(t, t.TempDir())}
	closed := map[*Node]bool{}
	defer func() {
		for _, s := range servers {
			if !closed[s] {
				s.Close()
			}
		}
	}()
	spec, err := phone.CreateGroupWith(GroupOptions{Name: "photos", Prefixes: []string{"photos/"}, Private: true, DevType: syncnode.Normal, Copies: 2})
	if err != nil {
		t.Fatal(err)
	}
	g := spec.ID
	for _, s := range servers {
		join(t, phone, s, g, syncnode.Server)
	}
	testkit.WaitFor(t, 10*time.Second, "membership on every node", func() bool {
		for _, n := range append([]*Node{phone}, servers...) {
			if len(n.Members(g)) != 4 {
				return false
			}
		}
		return true
	})
	ref := putBlobRow(t, phone, g, "photos/1", 64<<10, 7)
	testkit.WaitFor(t, 30*time.Second, "every server holds the blob", func() bool {
		return servers[0].HasBlob(ref) && servers[1].HasBlob(ref) && servers[2].HasBlob(ref)
	})
	var bare []*Node
	testkit.WaitFor(t, 30*time.Second, "one server holds the group's shares", func() bool {
		bare = nil
		for _, s := range servers {
			if sharesIn(t, s, ref, g) == 0 {
				bare = append(bare, s)
			}
		}
		return sharesIn(t, phone, ref, g) == 0 && len(bare) == 2
	})
	testkit.WaitFor(t, 10*time.Second, "the phone's signpost names three server copies", func() bool {
		why, err := phone.Why(ref)
		return err == nil && len(why.Copies) == 1 && why.Copies[0].Known == 3
	})
	if err := bare[0].blobs.Delete(ref); err != nil {
		t.Fatal(err)
	}
	// A take of the shares, under way on a server that fetched last,
	// holds the copy for a moment.
	var held *holds.Error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		err = bare[1].RemoveBlob(ref)
		if !errors.As(err, &held) || !held.Only(holds.Work) || time.Now().After(deadline) {
			break
		}
	}
	if !errors.Is(err, ErrPinned) || !strings.Contains(err.Error(), "wants 2 verified server copies, and 1 other servers hold one now") {
		t.Fatalf("a removal with one other server holding the blob, and one named that lost it: %v", err)
	}
	if !bare[1].HasBlob(ref) {
		t.Fatal("the refused removal deleted the copy")
	}
	// One server answers that it holds the blob now (the one that lost
	// its copy may have fetched it back meanwhile: it is stopped too).
	for _, b := range bare {
		b.Close()
		closed[b] = true
	}
	if err := phone.RemoveBlob(ref); !errors.Is(err, ErrPinned) || !phone.HasBlob(ref) {
		t.Fatalf("the phone's removal, one server answering that it holds the blob: %v", err)
	}
}

// TestPublicBlobsAreProvided: a blob of a public group is provided in the
// DHT, and one of a private group is not, both at the put and in a full
// round of the reprovider, which lists the node's held blobs.
func TestPublicBlobsAreProvided(t *testing.T) {
	t.Parallel()
	pub, gp := meshWith(t, false, func(*Config) {}, syncnode.Normal, syncnode.Normal)
	priv, gq := meshWith(t, true, func(*Config) {}, syncnode.Normal)
	a, b := pub[0], pub[1]
	open := putBlobRow(t, a, gp, "photos/open", 8<<10, 21)
	testkit.WaitFor(t, 10*time.Second, "the public blob's provider found", func() bool {
		ps, _ := b.dht.FindProviders(t.Context(), open, 2)
		return slices.ContainsFunc(ps, func(ai peer.AddrInfo) bool { return ai.ID == a.ID() })
	})
	closed := putBlobRow(t, priv[0], gq, "photos/closed", 8<<10, 22)
	held := discovery.Provided{Book: a.book, HeldRefs: a.custody.HeldRefs, Holds: a.holds}
	if got := held.Provided(); !slices.Contains(got, open) {
		t.Fatalf("the reprovider's round lists %v, not the public blob", got)
	}
	other := discovery.Provided{Book: priv[0].book, HeldRefs: priv[0].custody.HeldRefs, Holds: priv[0].holds}
	if got := other.Provided(); slices.Contains(got, closed) || other.Provides(closed) {
		t.Fatalf("a private blob is provided: %v", got)
	}
}
