package node

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/ownership"
)

// collectGrace is the grace of the collection tests: long enough that a
// row written right after a delete reaches every member within it.
const collectGrace = 1500 * time.Millisecond

func withGrace(c *Config) { c.CollectGrace = collectGrace }

// unreferenced reports whether n's why names g among the groups whose
// rows no longer reference ref, with a due time.
func unreferenced(t *testing.T, n *Node, ref syncnode.BlobRef, g syncnode.GroupID) bool {
	w, err := n.Why(ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range w.Unreferenced {
		if u.Group == g && !u.Due.IsZero() {
			return true
		}
	}
	return false
}

// TestDeletedRowFreesItsBlobWithoutAServer: in a group with no server the
// creator keeps its two shares for good, so `blob rm` was refused for
// ever, even after the row went. Once no row references the blob for
// the grace, the shares dissolve and the copy is collected; a pinned
// copy stays, and then removes.
func TestDeletedRowFreesItsBlobWithoutAServer(t *testing.T) {
	t.Parallel()
	nodes, g := meshWith(t, true, withGrace, syncnode.Normal, syncnode.Normal)
	a := nodes[0]
	ref := putBlobRow(t, a, g, "photos/gone", 32<<10, 71)
	kept := putBlobRow(t, a, g, "photos/kept", 32<<10, 72)
	pinned := putBlobRow(t, a, g, "photos/pinned", 32<<10, 73)
	if err := a.PinBlob(t.Context(), pinned); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveBlob(ref); !errors.Is(err, ErrPinned) {
		t.Fatalf("removal while a row references the blob: %v, want ErrPinned", err)
	}
	for _, key := range []string{"photos/gone", "photos/pinned"} {
		if _, err := a.DeleteRow(g, key); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "why to name the blob unreferenced", func() bool { return unreferenced(t, a, ref, g) })
	if !a.HasBlob(ref) || sharesIn(t, a, ref, g) != ownership.CreatorShares {
		t.Fatal("the blob went before its grace ran out")
	}
	testkit.WaitFor(t, 20*time.Second, "the unreferenced blob collected", func() bool {
		return !a.HasBlob(ref) && sharesIn(t, a, ref, g) == 0
	})
	testkit.WaitFor(t, 10*time.Second, "the pinned blob's shares dissolved", func() bool { return sharesIn(t, a, pinned, g) == 0 })
	if !a.HasBlob(pinned) {
		t.Fatal("collection deleted a copy the user pinned")
	}
	if err := a.UnpinBlob(pinned); err != nil {
		t.Fatal(err)
	}
	// Unpinned, the copy goes: by this removal, or by the collector if
	// it came first.
	if err := a.RemoveBlob(pinned); err != nil && !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("removal of an unpinned, collected blob: %v", err)
	}
	if a.HasBlob(pinned) {
		t.Fatal("an unpinned, collected blob is still here")
	}
	if !a.HasBlob(kept) || sharesIn(t, a, kept, g) != ownership.CreatorShares {
		t.Fatal("a blob a live row references lost its copy or its shares")
	}
	if w, err := a.Why(ref); err != nil || len(w.Unreferenced) == 0 || w.Unreferenced[0].Collected.IsZero() {
		t.Fatalf("why does not say the blob was collected: %+v, %v", w.Unreferenced, err)
	}
}

// TestOverwrittenRowFreesItsBlobOnTheServer: the server held the blob
// with both shares; a row overwritten with a value that names it no more
// lets the server drop it too, and the device.
func TestOverwrittenRowFreesItsBlobOnTheServer(t *testing.T) {
	t.Parallel()
	nodes, g := meshWith(t, true, withGrace, syncnode.Normal, syncnode.Server)
	dev, srv := nodes[0], nodes[1]
	ref := putBlobRow(t, dev, g, "photos/x", 64<<10, 81)
	testkit.WaitFor(t, 20*time.Second, "the server to hold the blob with both shares", func() bool {
		return srv.HasBlob(ref) && sharesIn(t, srv, ref, g) == ownership.CreatorShares
	})
	v, _ := msgpack.Marshal(map[string]any{"name": "photos/x", "note": "no blob any more"})
	if _, err := dev.PutRow(g, "photos/x", v); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "the blob collected on the server and the device", func() bool {
		return !srv.HasBlob(ref) && !dev.HasBlob(ref) && totalShares(t, nodes, ref, g) == 0
	})
}

// TestReferencedAgainWithinTheGraceIsKept: a row deleted and another one
// naming the same blob written within the grace: nothing is collected,
// however long the node waits after.
func TestReferencedAgainWithinTheGraceIsKept(t *testing.T) {
	t.Parallel()
	nodes, g := meshWith(t, true, withGrace, syncnode.Normal, syncnode.Normal)
	a, b := nodes[0], nodes[1]
	ref := putBlobRow(t, a, g, "photos/first", 32<<10, 91)
	if _, err := a.DeleteRow(g, "photos/first"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "why to name the blob unreferenced", func() bool { return unreferenced(t, a, ref, g) })
	// Another member names it again, in another row.
	v, _ := msgpack.Marshal(map[string]any{"blob": ref})
	if _, err := b.PutRow(g, "photos/again", v); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the blob referenced again", func() bool { return !unreferenced(t, a, ref, g) })
	before := a.collector.Passes()
	testkit.WaitFor(t, 20*time.Second, "passes past twice the grace", func() bool {
		return a.collector.Passes() > before+20
	})
	if !a.HasBlob(ref) || sharesIn(t, a, ref, g) != ownership.CreatorShares {
		t.Fatalf("a blob referenced again within the grace was collected: held %v, shares %d", a.HasBlob(ref), sharesIn(t, a, ref, g))
	}
}

// TestNamedAgainAfterCollectionIsKept: a blob collected everywhere but on
// a laptop that pinned its fetched copy is named again by a row from the
// phone, which holds no copy and so is granted no shares. The server
// fetches it again, and the group holds shares of it again (nobody kept
// any, so the holders reclaim them): the server may not remove it, and
// the laptop may let its copy go.
func TestNamedAgainAfterCollectionIsKept(t *testing.T) {
	t.Parallel()
	nodes, g := meshWith(t, true, withGrace, syncnode.Normal, syncnode.Normal, syncnode.Server)
	phone, laptop, srv := nodes[0], nodes[1], nodes[2]
	ref := putBlobRow(t, phone, g, "photos/x", 64<<10, 83)
	testkit.WaitFor(t, 20*time.Second, "the server to hold the blob with both shares", func() bool {
		return srv.HasBlob(ref) && sharesIn(t, srv, ref, g) == ownership.CreatorShares
	})
	if err := laptop.PinBlob(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	if _, err := phone.DeleteRow(g, "photos/x"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "the blob collected but on the laptop, which pinned it", func() bool {
		return !srv.HasBlob(ref) && !phone.HasBlob(ref) && laptop.HasBlob(ref) && totalShares(t, nodes, ref, g) == 0
	})
	v, _ := msgpack.Marshal(map[string]any{"blob": ref})
	if _, err := phone.PutRow(g, "photos/y", v); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "the server to hold it again, with the group's shares somewhere", func() bool {
		return srv.HasBlob(ref) && totalShares(t, nodes, ref, g) >= ownership.CreatorShares
	})
	if err := laptop.UnpinBlob(ref); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 30*time.Second, "the server to hold the group's shares", func() bool {
		return sharesIn(t, srv, ref, g) == ownership.CreatorShares
	})
	if err := srv.RemoveBlob(ref); !errors.Is(err, ErrPinned) {
		t.Fatalf("the server's removal of the one copy its shares keep: %v", err)
	}
	if err := laptop.RemoveBlob(ref); err != nil {
		t.Fatalf("the laptop's removal of its spare copy: %v", err)
	}
}

// TestCollectionDropsACutFetch: a member whose fetch of a blob was cut
// short keeps the bytes so far, to resume; once the row goes and the
// blob is collected there, nothing will resume it, and the bytes go.
func TestCollectionDropsACutFetch(t *testing.T) {
	t.Parallel()
	nodes, g := meshWith(t, true, withGrace, syncnode.Normal, syncnode.Normal)
	a, b := nodes[0], nodes[1]
	// Larger than a blob packed, whose partial is kept in memory alone.
	ref := putBlobRow(t, a, g, "photos/cut", blobstore.PackMax+100<<10, 74)
	testkit.WaitFor(t, 10*time.Second, "the row at b", func() bool { _, ok, _ := b.GetRow(g, "photos/cut"); return ok })
	// A fetch at b cut short after its first group.
	ob, err := a.blobs.Outboard(ref)
	if err != nil {
		t.Fatal(err)
	}
	r, err := a.blobs.Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 16<<10)
	_, err = r.ReadAt(first, 0)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	p, err := b.blobs.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WriteAt(first, 0); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	partial := filepath.Join(b.cfg.DataDir, "blobs", "partial", ref.Hex()+".data")
	if _, err := os.Stat(partial); err != nil {
		t.Fatalf("the cut fetch's bytes: %v", err)
	}
	if _, err := a.DeleteRow(g, "photos/cut"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 20*time.Second, "the cut fetch's bytes gone with the collection", func() bool {
		_, err := os.Stat(partial)
		return errors.Is(err, os.ErrNotExist)
	})
	if b.HasBlob(ref) {
		t.Fatal("b holds the blob")
	}
}
