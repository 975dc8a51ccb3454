package featuretests

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/node"
)

// TestRefusedRowWritesNothing: a row put refused for an unknown group, a
// key outside the group's prefixes or an oversized value leaves no share,
// no signpost and no row behind, and the blob can still be removed.
func TestRefusedRowWritesNothing(t *testing.T) {
	t.Parallel()
	n := start(t, func(c *node.Config) { c.BlobBudget = 1 << 30 })
	g := createGroup(t, n, "photos", syncnode.Normal)
	info, err := n.PutBlob(t.Context(), bytes.NewReader(randomBytes(64<<10, 1)))
	if err != nil {
		t.Fatal(err)
	}
	value := func(pad int) []byte {
		v, err := msgpack.Marshal(map[string]any{"img": info.Ref, "pad": strings.Repeat("x", pad)})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		name  string
		group syncnode.GroupID
		key   string
		value []byte
	}{
		{"unknown group", "no-such-group", "photos/a", value(0)},
		{"key outside the prefixes", g, "videos/a", value(0)},
		{"oversized value", g, "photos/a", value(4 << 20)},
	} {
		if _, err := n.PutRow(c.group, c.key, c.value); err == nil {
			t.Fatalf("%s: the write was accepted", c.name)
		}
		if sh, err := n.BlobShares(info.Ref); err != nil || len(sh) != 0 {
			t.Fatalf("%s: refused write left shares %v (%v)", c.name, sh, err)
		}
		if sp, err := n.Signpost(info.Ref); !errors.Is(err, syncnode.ErrNotFound) {
			t.Fatalf("%s: refused write left a signpost %+v (%v)", c.name, sp, err)
		}
		if rows, _ := n.ListRows(g, ""); len(rows) != 0 {
			t.Fatalf("%s: refused write left rows %v", c.name, rows)
		}
	}
	if err := n.RemoveBlob(info.Ref); err != nil {
		t.Fatalf("the blob is pinned by refused writes: %v", err)
	}
}

// blobValue is a row value naming ref.
func blobValue(t *testing.T, ref syncnode.BlobRef) []byte {
	t.Helper()
	v, err := msgpack.Marshal(map[string]any{"img": ref})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRowBeforeBlobKeepsOnlyCopy: whichever comes second, the row or the
// bytes, the only copy is pinned by its creator's two shares and survives
// eviction under a budget — also when a stop falls between storing the
// bytes and granting the shares.
func TestRowBeforeBlobKeepsOnlyCopy(t *testing.T) {
	t.Parallel()
	for _, order := range []string{"row first", "blob first", "row first, stop before the grant"} {
		t.Run(order, func(t *testing.T) {
			cfg := config(t, t.TempDir())
			cfg.BlobBudget = 1 // every unpinned blob goes
			n := open(t, cfg)
			defer func() { n.Close() }()
			g := createGroup(t, n, "photos", syncnode.Normal)
			data := randomBytes(200<<10, 3)
			ref := blake3Ref(data)
			put := func() {
				if _, err := n.PutBlob(t.Context(), bytes.NewReader(data)); err != nil {
					t.Fatal(err)
				}
			}
			row := func() {
				if _, err := n.PutRow(g, "photos/only", blobValue(t, ref)); err != nil {
					t.Fatal(err)
				}
			}
			switch order {
			case "row first":
				row()
				put()
			case "blob first":
				put()
				row()
			default:
				row()
				n.Close()
				// The bytes land in the store as a put does, and the node
				// stops before it can grant anything.
				db, bs, err := node.OpenStopped(cfg.DataDir, slog.New(slog.DiscardHandler))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := bs.Put(t.Context(), bytes.NewReader(data), ref); err != nil {
					t.Fatal(err)
				}
				bs.Close()
				db.Close()
				n = open(t, cfg)
			}
			for range 3 {
				if _, err := n.Evict(); err != nil {
					t.Fatal(err)
				}
			}
			if !n.HasBlob(ref) {
				t.Fatal("the only copy of a referenced blob was evicted")
			}
			// A removal restores a grant cut short itself, whether or not
			// the walk of the store after the open has reached the blob.
			if err := n.RemoveBlob(ref); !errors.Is(err, node.ErrPinned) {
				t.Fatalf("rm of the only copy: %v, want ErrPinned", err)
			}
			if got := shares(t, n, ref, g); got != 2 {
				t.Fatalf("creator holds %d shares, want 2", got)
			}
		})
	}
}

// TestLeafHandOffMovesShares: a leaf hands its blob to a member that lacks
// it and evicts everything it can (a one-byte budget). The member fetches
// it once and takes a share; the hand-off ends with the shares moved and
// the outcome in both journals, and the member does not loop fetching.
func TestLeafHandOffMovesShares(t *testing.T) {
	t.Parallel()
	leaf := start(t)
	member := start(t, func(c *node.Config) { c.BlobBudget = 1 })
	g := createGroup(t, leaf, "photos", syncnode.Leaf)
	join(t, leaf, member, g, syncnode.Normal)
	waitFor(t, 10*time.Second, "membership", func() bool { return len(member.Members(g)) == 2 && len(leaf.Members(g)) == 2 })
	ref := putBlobRow(t, leaf, g, "photos/from-the-leaf", randomBytes(300<<10, 4))

	waitFor(t, 20*time.Second, "the leaf's shares all on the member", func() bool {
		return shares(t, leaf, ref, g) == 0 && shares(t, member, ref, g) == 2
	})
	if !member.HasBlob(ref) {
		t.Fatal("the member holds shares without the blob")
	}
	w, err := leaf.Why(ref)
	if err != nil || !strings.Contains(w.Handoff, "handed") {
		t.Fatalf("leaf's journal of the hand-off: %q (%v)", w.Handoff, err)
	}
	w, err = member.Why(ref)
	if err != nil || !strings.Contains(w.Handoff, "took") {
		t.Fatalf("member's journal of the hand-off: %q (%v)", w.Handoff, err)
	}
	// Pinned by its shares, the member keeps the blob and fetches it no more.
	in := member.Stats().BytesIn
	for range 5 {
		if err := member.SyncNow(g); err != nil {
			t.Fatal(err)
		}
		if _, err := member.Evict(); err != nil {
			t.Fatal(err)
		}
	}
	if !member.HasBlob(ref) || member.Stats().BytesIn != in {
		t.Fatalf("member after more rounds: holds %v, fetched %d more bytes", member.HasBlob(ref), member.Stats().BytesIn-in)
	}
	if total := totalShares(t, []*node.Node{leaf, member}, ref, g); total != 2 {
		t.Fatalf("share total %d, want 2", total)
	}
}

// TestServerTakesSharesFromRelayingMember: a member holds a blob and one
// of its shares (taken from the leaf that wrote it) and is the one that
// relays the row to the server while the leaf is away. The server takes
// the member's share, so the member may evict; when the leaf returns, the
// server has both.
func TestServerTakesSharesFromRelayingMember(t *testing.T) {
	t.Parallel()
	leafCfg, serverCfg := config(t, t.TempDir()), config(t, t.TempDir())
	leaf := open(t, leafCfg)
	member := start(t)
	g := createGroup(t, leaf, "photos", syncnode.Leaf)
	join(t, leaf, member, g, syncnode.Normal)
	server := open(t, serverCfg)
	join(t, leaf, server, g, syncnode.Server)
	server.Close()
	waitFor(t, 10*time.Second, "membership at the member", func() bool { return len(member.Members(g)) == 3 })

	ref := putBlobRow(t, leaf, g, "photos/relayed", randomBytes(256<<10, 5))
	waitFor(t, 20*time.Second, "the member holding a share", func() bool {
		return member.HasBlob(ref) && shares(t, member, ref, g) >= 1
	})
	// The leaf goes away, perhaps mid-way through a second hand-off.
	leaf.Close()

	server = open(t, serverCfg)
	defer server.Close()
	// Settled: none left with the member, none in escrow there.
	waitFor(t, 30*time.Second, "the member's shares on the server, the member free to evict", func() bool {
		ok, err := nodetest.Ledger(member).MayEvict(ref)
		return server.HasBlob(ref) && shares(t, server, ref, g) >= 1 && ok && err == nil
	})
	leaf = open(t, leafCfg)
	defer leaf.Close()
	waitFor(t, 30*time.Second, "every share on the server", func() bool {
		return shares(t, leaf, ref, g) == 0 && shares(t, server, ref, g) == 2
	})
}

// TestLostDatabaseNeverCountsSharesTwice: two servers hold a phone's blob,
// one with the group's two shares; the phone evicted its copy. A server
// whose database is lost (its blobs kept) cannot tell which of its blobs
// it created or kept shares of: it asks the group. The one without shares
// takes none (taking the creator's would make four); the one that had
// them, finding that no member keeps any, takes the two back. The blob
// is a file of its own, or packed with others (whose index, kept in the
// database, is rebuilt from the packs).
func TestLostDatabaseNeverCountsSharesTwice(t *testing.T) {
	t.Parallel()
	for _, size := range []int{2 << 20, 100 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			testLostDatabase(t, size)
		})
	}
}

func testLostDatabase(t *testing.T, size int) {
	phone := start(t, func(c *node.Config) { c.BlobBudget = int64(size) / 2 })
	cfgs := []node.Config{config(t, t.TempDir()), config(t, t.TempDir())}
	servers := []*node.Node{open(t, cfgs[0]), open(t, cfgs[1])}
	t.Cleanup(func() { servers[0].Close(); servers[1].Close() })
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, servers[0], g, syncnode.Server)
	join(t, phone, servers[1], g, syncnode.Server)
	ref := putBlobRow(t, phone, g, "photos/a", randomBytes(size, 76))
	all := func() []*node.Node { return []*node.Node{phone, servers[0], servers[1]} }
	waitFor(t, 30*time.Second, "both servers' copies, the group's two shares on one, the phone's copy evicted", func() bool {
		return servers[0].HasBlob(ref) && servers[1].HasBlob(ref) && !phone.HasBlob(ref) &&
			totalShares(t, all(), ref, g) == 2 && shares(t, phone, ref, g) == 0
	})
	keeper := 0
	if shares(t, servers[1], ref, g) == 2 {
		keeper = 1
	}
	lose := func(i int) {
		servers[i].Close()
		if err := os.RemoveAll(filepath.Join(cfgs[i].DataDir, "db")); err != nil {
			t.Fatal(err)
		}
		servers[i] = open(t, cfgs[i])
		join(t, phone, servers[i], g, syncnode.Server)
		waitFor(t, 20*time.Second, "the recovered server asked the group about its blob", func() bool {
			w, err := servers[i].Why(ref)
			asked := err == nil && strings.Contains(w.Handoff, "database was lost")
			return asked || totalShares(t, all(), ref, g) > 2
		})
	}
	lose(1 - keeper)
	if n := totalShares(t, all(), ref, g); n != 2 || shares(t, servers[keeper], ref, g) != 2 {
		t.Fatalf("after the server without shares lost its database: %d shares in all, %d on the keeper", n, shares(t, servers[keeper], ref, g))
	}
	lose(keeper)
	if n := totalShares(t, all(), ref, g); n != 2 || shares(t, servers[keeper], ref, g) != 2 {
		t.Fatalf("after the keeper lost its database: %d shares in all, %d on it", n, shares(t, servers[keeper], ref, g))
	}
}
