package node

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/syncgroup"
)

// TestJoinsWhileTheCreatorIsAway: the creator makes a member an admin and
// goes offline for good; a device invited by the creator before that, and
// another invited by the new admin, both join through the new admin, and
// their rows reach it. The creator's device is lost, and the group is not
// locked: the new admin ejects, invites and changes prefixes.
func TestJoinsWhileTheCreatorIsAway(t *testing.T) {
	creator := openNode(t, t.TempDir())
	admin, early, late := startNode(t), startNode(t), startNode(t)
	spec, err := creator.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		creator.Close()
		t.Fatal(err)
	}
	join(t, creator, admin, spec.ID, syncnode.Normal)
	if _, err := creator.ChangeGroup(spec.ID, syncgroup.Change{Op: syncgroup.AddAdmin, Peer: admin.ID()}); err != nil {
		creator.Close()
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the new admin learns its role", func() bool {
		s, _ := admin.GroupSpec(spec.ID)
		return slices.Contains(s.Admins, admin.ID())
	})
	inv := invitationFor(t, creator, early, spec.ID, syncnode.Normal)
	if got := names(t, inv); !got[admin.ID()] {
		t.Fatalf("the creator's invitation names %v, not the other admin %s", got, admin.ID())
	}
	if err := creator.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := early.JoinGroup(t.Context(), inv); err != nil {
		t.Fatalf("a join with the creator's invitation, the creator offline: %v", err)
	}
	if _, err := late.JoinGroup(t.Context(), invitationFor(t, admin, late, spec.ID, syncnode.Normal)); err != nil {
		t.Fatalf("a join with the new admin's invitation: %v", err)
	}
	v, _ := msgpack.Marshal("hello")
	for i, n := range []*Node{early, late} {
		if _, err := n.PutRow(spec.ID, "photos/"+n.ID().String(), v); err != nil {
			t.Fatalf("joiner %d writes: %v", i, err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "the joiners' rows at the admin", func() bool {
		rows, _ := admin.ListRows(spec.ID, "photos/")
		return len(rows) == 2
	})
	if _, err := admin.ChangeGroup(spec.ID, syncgroup.Change{Op: syncgroup.AddPrefix, Prefix: "docs/"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the new prefix at the joiners", func() bool {
		_, err := late.PutRow(spec.ID, "docs/1", v)
		return err == nil
	})
	// The creator, gone, stays an admin: no junior admin removes it.
	if _, err := admin.ChangeGroup(spec.ID, syncgroup.Change{Op: syncgroup.RemoveAdmin, Peer: creator.ID()}); !errors.Is(err, syncgroup.ErrNotAllowed) {
		t.Fatalf("a junior admin removing the creator: %v", err)
	}
}

// TestJoinRedirectedToAnAdminMadeSince: a device holds an invitation
// the creator issued before it made another member an admin, so it names
// the creator and the group's server, not the new admin. The creator is
// offline; the server, which may not admit, answers with where the admins
// are, and the new admin admits.
func TestJoinRedirectedToAnAdminMadeSince(t *testing.T) {
	creator := openNode(t, t.TempDir())
	admin, srv, joiner := startNode(t), startNode(t), startNode(t)
	spec, err := creator.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		creator.Close()
		t.Fatal(err)
	}
	join(t, creator, srv, spec.ID, syncnode.Server)
	join(t, creator, admin, spec.ID, syncnode.Normal)
	inv := invitationFor(t, creator, joiner, spec.ID, syncnode.Normal)
	if got := names(t, inv); got[admin.ID()] || !got[srv.ID()] {
		t.Fatalf("the invitation names %v: want the server, not the member made an admin later", got)
	}
	if _, err := creator.ChangeGroup(spec.ID, syncgroup.Change{Op: syncgroup.AddAdmin, Peer: admin.ID()}); err != nil {
		creator.Close()
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the server learns of the new admin", func() bool {
		s, _ := srv.GroupSpec(spec.ID)
		return slices.Contains(s.Admins, admin.ID())
	})
	if err := creator.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := joiner.JoinGroup(t.Context(), inv); err != nil {
		t.Fatalf("a join with an invitation from before the new admin, the creator offline: %v", err)
	}
	if !slices.ContainsFunc(admin.Members(spec.ID), func(m syncgroup.Member) bool { return m.Peer == joiner.ID() }) {
		t.Fatal("the new admin does not hold the joiner for a member")
	}
}

// TestLastAdminLeaves: the only admin of a group with members is refused
// when it leaves, before any share is handed on; once it has named
// another admin it leaves, giving its role up, and the other admin admits.
func TestLastAdminLeaves(t *testing.T) {
	nodes, g := mesh(t, false, syncnode.Normal, syncnode.Normal, syncnode.Normal)
	if _, err := nodes[0].LeaveGroupWith(t.Context(), g, LeaveOptions{Force: true}); !errors.Is(err, syncgroup.ErrLastAdmin) {
		t.Fatalf("the last admin leaving: %v", err)
	}
	if _, err := nodes[0].ChangeGroup(g, syncgroup.Change{Op: syncgroup.AddAdmin, Peer: nodes[1].ID()}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the new admin learns its role", func() bool {
		s, _ := nodes[1].GroupSpec(g)
		return slices.Contains(s.Admins, nodes[1].ID())
	})
	if err := nodes[0].LeaveGroup(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the admins without the one that left", func() bool {
		for _, n := range nodes[1:] {
			if s, _ := n.GroupSpec(g); !slices.Equal(s.Admins, []peer.ID{nodes[1].ID()}) {
				return false
			}
		}
		return true
	})
	joiner := startNode(t)
	if _, err := joiner.JoinGroup(t.Context(), invitationFor(t, nodes[1], joiner, g, syncnode.Normal)); err != nil {
		t.Fatalf("a join after the creator left: %v", err)
	}
}

// TestWatchersSeeTheGroupChange: a member's watcher is told when an
// admin changes the group's spec, and by whom.
func TestWatchersSeeTheGroupChange(t *testing.T) {
	nodes, g := mesh(t, false, syncnode.Normal, syncnode.Normal)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	events := nodes[1].Watch(ctx, g, WatchOptions{Now: true})
	if _, err := nodes[0].ChangeGroup(g, syncgroup.Change{Op: syncgroup.AddPrefix, Prefix: "docs/"}); err != nil {
		t.Fatal(err)
	}
	for e, err := range events {
		if err != nil {
			t.Fatalf("no group.changed event: %v", err)
		}
		if e.Kind == feed.GroupChanged {
			if e.Peer != nodes[0].ID() {
				t.Fatalf("the change is said to be %s's, not the admin's", e.Peer)
			}
			if s, _ := nodes[1].GroupSpec(g); !slices.Contains(s.Prefixes, "docs/") {
				t.Fatalf("told of the change before it applies: prefixes %v", s.Prefixes)
			}
			return
		}
	}
	t.Fatal("the watch ended without a group.changed event")
}

// TestRemovedPrefixLetsItsBlobsGo: the rows under a prefix an admin
// removes leave the group, and their blobs are collected after the grace
// as if the rows were deleted; a prefix added back within the grace
// brings its rows back and keeps its blobs.
func TestRemovedPrefixLetsItsBlobsGo(t *testing.T) {
	t.Parallel()
	nodes, g := meshWith(t, true, withGrace, syncnode.Normal, syncnode.Normal)
	a := nodes[0]
	if _, err := a.ChangeGroup(g, syncgroup.Change{Op: syncgroup.AddPrefix, Prefix: "docs/"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ChangeGroup(g, syncgroup.Change{Op: syncgroup.AddPrefix, Prefix: "tmp/"}); err != nil {
		t.Fatal(err)
	}
	doc := putBlobRow(t, a, g, "docs/a", 16<<10, 81)
	tmp := putBlobRow(t, a, g, "tmp/a", 16<<10, 82)
	for _, p := range []string{"docs/", "tmp/"} {
		if _, err := a.ChangeGroup(g, syncgroup.Change{Op: syncgroup.RemovePrefix, Prefix: p}); err != nil {
			t.Fatal(err)
		}
	}
	if rows, _ := a.ListRows(g, "docs/"); len(rows) != 0 {
		t.Fatalf("rows under a removed prefix still listed: %v", rows)
	}
	testkit.WaitFor(t, 10*time.Second, "the blobs under the removed prefixes unreferenced", func() bool {
		return unreferenced(t, a, doc, g) && unreferenced(t, a, tmp, g)
	})
	if _, err := a.ChangeGroup(g, syncgroup.Change{Op: syncgroup.AddPrefix, Prefix: "docs/"}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 20*time.Second, "the blob under the prefix left out collected", func() bool {
		return !a.HasBlob(tmp) && sharesIn(t, a, tmp, g) == 0
	})
	if rows, _ := a.ListRows(g, "docs/"); len(rows) != 1 || !a.HasBlob(doc) || sharesIn(t, a, doc, g) != ownership.CreatorShares {
		t.Fatalf("the prefix added back: %d rows, blob held %v, %d shares", len(rows), a.HasBlob(doc), sharesIn(t, a, doc, g))
	}
}

// TestForcedLeaveDropsTheShares: an admin leaves by force while the only
// other member is away, with a blob whose shares no one could take: once
// it has left, those shares pin nothing here.
func TestForcedLeaveDropsTheShares(t *testing.T) {
	t.Parallel()
	nodes, g := mesh(t, false, syncnode.Normal, syncnode.Normal)
	ref := putBlobRow(t, nodes[0], g, "photos/only.jpg", 8<<10, 4)
	if _, err := nodes[0].ChangeGroup(g, syncgroup.Change{Op: syncgroup.AddAdmin, Peer: nodes[1].ID()}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the other admin learns its role", func() bool {
		s, _ := nodes[1].GroupSpec(g)
		return slices.Contains(s.Admins, nodes[1].ID())
	})
	nodes[1].Close()
	atRisk, err := nodes[0].LeaveGroupWith(t.Context(), g, LeaveOptions{Force: true})
	if err != nil || !slices.Contains(atRisk, ref) {
		t.Fatalf("forced leave: %v at risk, %v", atRisk, err)
	}
	if sh, err := nodes[0].ledger.Shares(ref); err != nil || sh[g] != 0 {
		t.Fatalf("after the leave the node holds %v shares of the blob in the group (%v)", sh, err)
	}
}

// TestOnlyAnAdminInvites: a member that is no admin is refused an
// invitation (every admin would refuse the join it makes) and an
// ejection, each naming every admin to ask.
func TestOnlyAnAdminInvites(t *testing.T) {
	t.Parallel()
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal, syncnode.Normal)
	creator, admin, member := nodes[0], nodes[1], nodes[2]
	if _, err := creator.ChangeGroup(g, syncgroup.Change{Op: syncgroup.AddAdmin, Peer: admin.ID()}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the member learns of the second admin", func() bool {
		s, _ := member.GroupSpec(g)
		return len(s.Admins) == 2
	})
	_, err := member.Invite(g, startNode(t).ID(), syncnode.Normal, time.Hour)
	if !errors.Is(err, syncgroup.ErrNotAllowed) || !strings.Contains(err.Error(), creator.ID().String()) || !strings.Contains(err.Error(), admin.ID().String()) {
		t.Fatalf("a member's invitation: %v", err)
	}
	_, err = member.PlanEjection(t.Context(), g, creator.ID())
	if err == nil {
		err = member.EjectMember(g, creator.ID())
	}
	if !errors.Is(err, syncgroup.ErrNotAllowed) || !strings.Contains(err.Error(), admin.ID().String()) {
		t.Fatalf("a member's ejection: %v", err)
	}
}

// TestEjectionRefusedOverAnUnreadableRow: a row of the group that the
// admin's store cannot give back (another version at its key) makes an
// ejection refuse, even forced: going by the rows it could read, it might
// eject the member with blobs only that member keeps.
func TestEjectionRefusedOverAnUnreadableRow(t *testing.T) {
	t.Parallel()
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal)
	admin, member := nodes[0], nodes[1]
	putBlobRow(t, member, g, "photos/1", 16<<10, 3)
	putBlobRow(t, member, g, "photos/2", 16<<10, 4)
	testkit.WaitFor(t, 10*time.Second, "the member's rows at the admin", func() bool {
		rows, _ := admin.ListRows(g, "photos/")
		return len(rows) == 2
	})
	other, _, err := admin.GetRow(g, "photos/2")
	if err != nil {
		t.Fatal(err)
	}
	key := kv.Key(kv.Rows, append([]byte(g), 0))
	if err := admin.db.Update(func(txn *badger.Txn) error {
		return kv.Set(txn, append(key, "photos/1"...), kv.KindRow, other)
	}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.EjectMemberWith(t.Context(), g, member.ID(), EjectOptions{Force: true})
	if !errors.Is(err, syncnode.ErrCorruptRecord) {
		t.Fatalf("a forced ejection over an unreadable row: %v", err)
	}
	if !slices.ContainsFunc(admin.Members(g), func(m syncgroup.Member) bool { return m.Peer == member.ID() }) {
		t.Fatal("the refused ejection ejected the member")
	}
}
