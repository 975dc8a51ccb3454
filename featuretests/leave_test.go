package featuretests

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/ownership"
)

// TestLeavingServerHandsOffTheOnlyCopy: a server holds the only copy of
// the phone's blob and both its shares (the phone, over its budget,
// evicted it). When the server leaves, it first hands the shares to a
// member that stays — the phone, which fetches the blob back from it —
// and keeps no share of a group it is no longer in. With no member
// reachable, the leave is refused and names the blob at risk; forced, it
// leaves and says so.
func TestLeavingServerHandsOffTheOnlyCopy(t *testing.T) {
	t.Parallel()
	phone := start(t, func(c *node.Config) { c.BlobBudget = 1 << 20 })
	server := start(t)
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, server, g, syncnode.Server)
	data := randomBytes(2<<20, 71)
	ref := putBlobRow(t, phone, g, "photos/only", data)
	waitFor(t, 30*time.Second, "the server's copy with both shares, the phone's evicted", func() bool {
		return server.HasBlob(ref) && shares(t, server, ref, g) == 2 && !phone.HasBlob(ref)
	})

	if err := server.LeaveGroup(t.Context(), g); err != nil {
		t.Fatalf("the server's leave: %v", err)
	}
	if n := shares(t, server, ref, g); n != 0 {
		t.Fatalf("the server keeps %d shares of a group it left", n)
	}
	if !phone.HasBlob(ref) || shares(t, phone, ref, g) != 2 {
		t.Fatalf("after the server left, the phone holds the blob %v with %d shares", phone.HasBlob(ref), shares(t, phone, ref, g))
	}
	if !bytes.Equal(readAll(t, phone, ref), data) {
		t.Fatal("the phone's copy differs")
	}

	// A second server takes the shares, then finds no one to give them
	// to when it leaves: refused, naming the blob; forced, it leaves.
	other := start(t)
	join(t, phone, other, g, syncnode.Server)
	waitFor(t, 30*time.Second, "the second server's copy with both shares", func() bool {
		return other.HasBlob(ref) && shares(t, other, ref, g) == 2
	})
	phone.Close()
	atRisk, err := other.LeaveGroupWith(t.Context(), g, node.LeaveOptions{})
	if !errors.Is(err, node.ErrAtRisk) || !slices.Contains(atRisk, ref) {
		t.Fatalf("a leave that would leave the only copy at risk: %v, at risk %v", err, atRisk)
	}
	if _, err := other.GroupSpec(g); err != nil {
		t.Fatalf("the refused leave left the group: %v", err)
	}
	atRisk, err = other.LeaveGroupWith(t.Context(), g, node.LeaveOptions{Force: true})
	if err != nil || !slices.Contains(atRisk, ref) {
		t.Fatalf("a forced leave: %v, at risk %v", err, atRisk)
	}
	if _, err := other.GroupSpec(g); err == nil {
		t.Fatal("the forced leave did not leave")
	}
	// What it cost is on record, for `blob why`.
	if w, err := other.Why(ref); err != nil || !strings.Contains(w.Handoff, "by force") {
		t.Fatalf("the forced leave is not recorded for the blob: %+v, %v", w, err)
	}
}

// TestRejoinedMemberNeverReusesASequenceNumber: a member writes rows that
// reach the server but not the admin (it is down), then leaves or is
// ejected. Invited back, its first write must carry a sequence number it
// never used: one it used already is taken by the server for a row it
// holds, and the write never reaches it.
func TestRejoinedMemberNeverReusesASequenceNumber(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"leaves", "is ejected"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			adminCfg := config(t, t.TempDir())
			admin := open(t, adminCfg)
			t.Cleanup(func() { admin.Close() })
			laptop, server := start(t), start(t)
			g := createGroup(t, admin, "notes", syncnode.Normal)
			join(t, admin, laptop, g, syncnode.Normal)
			join(t, admin, server, g, syncnode.Server)
			waitFor(t, 10*time.Second, "every member known to the laptop", func() bool { return len(laptop.Members(g)) == 3 })

			// The admin is away while the laptop writes: only the server
			// sees these rows.
			admin.Close()
			for _, k := range []string{"notes/a", "notes/b", "notes/c"} {
				if _, err := laptop.PutRow(g, k, []byte{0xa1, 'x'}); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, 10*time.Second, "the laptop's rows on the server", func() bool {
				_, ok, _ := server.GetRow(g, "notes/c")
				return ok
			})
			admin = open(t, adminCfg)
			t.Cleanup(func() { admin.Close() })
			if how == "leaves" {
				if err := laptop.LeaveGroup(t.Context(), g); err != nil {
					t.Fatal(err)
				}
			} else if _, err := admin.EjectMemberWith(t.Context(), g, laptop.ID(), node.EjectOptions{Force: true}); err != nil {
				t.Fatal(err)
			}
			join(t, admin, laptop, g, syncnode.Normal)
			row, err := laptop.PutRow(g, "notes/after", []byte{0xa1, 'y'})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 20*time.Second, "the rejoined laptop's new row on the server", func() bool {
				got, ok, _ := server.GetRow(g, "notes/after")
				return ok && got.Seq == row.Seq
			})
		})
	}
}

// TestLeaveWhileAloneKeepsTheRows: a member writes a row while no other
// member can be reached, then leaves. The row exists only in its replica,
// which a leave drops: the leave is refused, naming the reason; once a
// member answers, the row reaches it and the leave goes through.
func TestLeaveWhileAloneKeepsTheRows(t *testing.T) {
	t.Parallel()
	adminCfg := config(t, t.TempDir())
	admin := open(t, adminCfg)
	t.Cleanup(func() { admin.Close() })
	laptop := start(t)
	g := createGroup(t, admin, "notes", syncnode.Normal)
	join(t, admin, laptop, g, syncnode.Normal)
	admin.Close()
	if _, err := laptop.PutRow(g, "notes/offline", []byte{0xa1, 'x'}); err != nil {
		t.Fatal(err)
	}
	if _, err := laptop.LeaveGroupWith(t.Context(), g, node.LeaveOptions{}); !errors.Is(err, node.ErrAtRisk) {
		t.Fatalf("leaving with no member reachable: %v", err)
	}
	if _, err := laptop.GroupSpec(g); err != nil {
		t.Fatalf("the refused leave left the group: %v", err)
	}
	admin = open(t, adminCfg)
	t.Cleanup(func() { admin.Close() })
	if _, err := laptop.LeaveGroupWith(t.Context(), g, node.LeaveOptions{}); err != nil {
		t.Fatalf("leaving once the admin is back: %v", err)
	}
	if _, ok, _ := admin.GetRow(g, "notes/offline"); !ok {
		t.Fatal("the row written while alone is lost")
	}
}

// TestRejoinedMemberVouchesOnlyForRowsItHolds: a member writes a row that
// reaches the admin but not the server (down), leaves, joins again and
// writes more. Its new replica does not hold the first row; when it is
// the server's first peer back, it must not claim that row as sent, or
// the server takes it for known and never gets it from the admin.
func TestRejoinedMemberVouchesOnlyForRowsItHolds(t *testing.T) {
	t.Parallel()
	adminCfg, serverCfg := config(t, t.TempDir()), config(t, t.TempDir())
	admin, server := open(t, adminCfg), open(t, serverCfg)
	t.Cleanup(func() { admin.Close(); server.Close() })
	laptop := start(t)
	g := createGroup(t, admin, "notes", syncnode.Normal)
	join(t, admin, laptop, g, syncnode.Normal)
	join(t, admin, server, g, syncnode.Server)
	waitFor(t, 10*time.Second, "every member known to the laptop", func() bool { return len(laptop.Members(g)) == 3 })

	server.Close()
	if _, err := laptop.PutRow(g, "notes/first", []byte{0xa1, 'x'}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the first row on the admin", func() bool {
		_, ok, _ := admin.GetRow(g, "notes/first")
		return ok
	})
	if _, err := laptop.LeaveGroupWith(t.Context(), g, node.LeaveOptions{}); err != nil {
		t.Fatal(err)
	}
	join(t, admin, laptop, g, syncnode.Normal)
	if _, err := laptop.PutRow(g, "notes/second", []byte{0xa1, 'y'}); err != nil {
		t.Fatal(err)
	}

	// The server back, the admin away: the laptop is its first peer.
	admin.Close()
	server = open(t, serverCfg)
	t.Cleanup(func() { server.Close() })
	waitFor(t, 20*time.Second, "the second row on the server, from the laptop", func() bool {
		laptop.SyncNow(g)
		_, ok, _ := server.GetRow(g, "notes/second")
		return ok
	})
	admin = open(t, adminCfg)
	t.Cleanup(func() { admin.Close() })
	waitFor(t, 20*time.Second, "the first row on the server, from the admin", func() bool {
		_, ok, _ := server.GetRow(g, "notes/first")
		return ok
	})
}

// TestLeaveWithAHandOffInEscrowRefused: a member's shares of a blob are in
// escrow for a transfer its taker never settled when the member's user
// asks to leave. The hand-off is not done: the leave is refused and names
// the blob, rather than leaving with shares that may come back to a node
// out of the group.
func TestLeaveWithAHandOffInEscrowRefused(t *testing.T) {
	t.Parallel()
	admin := start(t)
	laptop, tablet := start(t), start(t)
	g := createGroup(t, admin, "photos", syncnode.Normal)
	join(t, admin, laptop, g, syncnode.Normal)
	join(t, admin, tablet, g, syncnode.Normal)
	ref := putBlobRow(t, laptop, g, "photos/a", randomBytes(256<<10, 77))
	waitFor(t, 10*time.Second, "the laptop knows the tablet", func() bool { return len(laptop.Members(g)) == 3 })
	if _, err := nodetest.Ledger(laptop).OfferAll(ownership.NewTransferID(), ref, g, tablet.ID()); err != nil {
		t.Fatal(err)
	}
	atRisk, err := laptop.LeaveGroupWith(t.Context(), g, node.LeaveOptions{})
	if !errors.Is(err, node.ErrAtRisk) || !slices.Contains(atRisk, ref) {
		t.Fatalf("leaving with a hand-off in escrow: %v, at risk %v", err, atRisk)
	}
	if _, err := laptop.GroupSpec(g); err != nil {
		t.Fatalf("the refused leave left the group: %v", err)
	}
}
