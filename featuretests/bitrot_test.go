package featuretests

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/node"
)

// blobFile is where a node keeps ref's bytes on disk.
func blobFile(cfg node.Config, ref syncnode.BlobRef) string {
	h := ref.Hex()
	return filepath.Join(cfg.DataDir, "blobs", "blobs", h[:2], h)
}

// rot flips one bit of the file at p, at off.
func rot(t *testing.T, p string, off int64) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 0x10
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// rotPacked flips one bit of data's off-th byte where a node keeps it
// packed, and reports the pack file.
func rotPacked(t *testing.T, cfg node.Config, data []byte, off int64) string {
	t.Helper()
	packs, _ := filepath.Glob(filepath.Join(cfg.DataDir, "blobs", "packs", "*.pack"))
	for _, p := range packs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, data); i >= 0 {
			rot(t, p, int64(i)+off)
			return p
		}
	}
	t.Fatalf("the blob's bytes are in none of the packs %v", packs)
	return ""
}

// readBlob reads ref whole from n, as a user's `blob cat` does.
func readBlob(n *node.Node, ref syncnode.BlobRef) ([]byte, error) {
	r, err := n.OpenBlob(ref)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
}

// TestCorruptBlobNeverServed rots a bit of a stored blob and of a stored
// tree on disk: the user's read fails with ErrDamaged, a peer's fetch gets
// no byte of it, the node stops claiming the copy while keeping its shares,
// and putting the bytes again repairs it.
func TestCorruptBlobNeverServed(t *testing.T) {
	t.Parallel()
	for _, part := range []string{"bytes", "tree"} {
		t.Run(part, func(t *testing.T) {
			noScrub := func(c *node.Config) { c.ScrubPeriod = -1 }
			aCfg := config(t, t.TempDir())
			noScrub(&aCfg)
			a := open(t, aCfg)
			defer a.Close()
			b := start(t, noScrub)
			g := createGroup(t, a, "photos", syncnode.Normal)
			join(t, a, b, g, syncnode.Normal)
			data := randomBytes(700<<10, 21)
			ref := putBlobRow(t, a, g, "photos/rotting", data)
			waitFor(t, 10*time.Second, "the row at b", func() bool { _, ok, _ := b.GetRow(g, "photos/rotting"); return ok })

			p := blobFile(aCfg, ref)
			if part == "tree" {
				rot(t, p, int64(len(data))+40) // the tree, after the bytes
			} else {
				rot(t, p, 500<<10+3)
			}
			// The peer's fetch: nothing but a clean failure, no bytes.
			if _, err := b.FetchBlob(t.Context(), ref, node.FetchOptions{}); err == nil {
				got := readAll(t, b, ref)
				t.Fatalf("b fetched the damaged blob (%d bytes, same %v)", len(got), bytes.Equal(got, data))
			}
			if b.HasBlob(ref) {
				t.Fatal("b holds a blob from a damaged copy")
			}
			// The user's read: an error, never other bytes.
			got, err := readBlob(a, ref)
			if !errors.Is(err, blobstore.ErrDamaged) && !errors.Is(err, syncnode.ErrNotFound) {
				t.Fatalf("read of a damaged copy: %d bytes, err %v; want ErrDamaged", len(got), err)
			}
			if len(got) > 0 && !bytes.Equal(got, data[:len(got)]) {
				t.Fatal("the read returned bytes that are not the blob's")
			}
			waitFor(t, 10*time.Second, "the damaged copy no longer claimed, and being restored", func() bool {
				w, err := a.Why(ref)
				if err != nil || w.Held || a.HasBlob(ref) || len(a.Restoring()) != 1 {
					return false
				}
				for _, l := range w.Locations {
					if l.Peer == a.ID().String() {
						return false
					}
				}
				return true
			})
			if sh := shares(t, a, ref, g); sh != 2 {
				t.Fatalf("the creator's shares went from 2 to %d with its damaged copy", sh)
			}
			if s := a.Stats(); s.Damaged != 1 || s.Restoring != 1 {
				t.Fatalf("stats after the damage: damaged %d, restoring %d", s.Damaged, s.Restoring)
			}
			// The user still has the photo: putting it again repairs the copy.
			if _, err := a.PutBlob(t.Context(), bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			if got, err := readBlob(a, ref); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("after putting the bytes again: %v", err)
			}
			if _, err := b.FetchBlob(t.Context(), ref, node.FetchOptions{}); err != nil {
				t.Fatalf("b's fetch after the repair: %v", err)
			}
		})
	}
}

// TestScrubRestoresDamagedCopy: a copy rots on disk where no one reads it,
// a blob in a file of its own or one packed with others. The scrubber
// finds it, the node stops claiming it, fetches a verified copy from a
// peer, and its shares stay with it all along.
func TestScrubRestoresDamagedCopy(t *testing.T) {
	t.Parallel()
	for _, size := range []int{2<<20 + 123, 100 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			testScrubRestores(t, size)
		})
	}
}

func testScrubRestores(t *testing.T, size int) {
	aCfg := config(t, t.TempDir())
	aCfg.ScrubPeriod = 300 * time.Millisecond
	aCfg.ScrubMaxRate = 1 << 30
	a := open(t, aCfg)
	defer a.Close()
	b := start(t, func(c *node.Config) { c.ScrubPeriod = -1 })
	g := createGroup(t, a, "photos", syncnode.Normal)
	join(t, a, b, g, syncnode.Normal)
	data := randomBytes(size, 22)
	ref := putBlobRow(t, a, g, "photos/scrubbed", data)
	waitFor(t, 10*time.Second, "the row at b", func() bool { _, ok, _ := b.GetRow(g, "photos/scrubbed"); return ok })
	if _, err := b.FetchBlob(t.Context(), ref, node.FetchOptions{}); err != nil {
		t.Fatal(err)
	}
	total := totalShares(t, []*node.Node{a, b}, ref, g)

	if size > blobstore.PackMax {
		rot(t, blobFile(aCfg, ref), 1<<20+5)
	} else {
		rotPacked(t, aCfg, data, int64(size/2))
	}
	waitFor(t, 20*time.Second, "the scrubber to find the damage", func() bool { return a.Stats().Damaged == 1 })
	waitFor(t, 20*time.Second, "a verified copy back on a", func() bool {
		got, err := readBlob(a, ref)
		return err == nil && bytes.Equal(got, data)
	})
	if got := totalShares(t, []*node.Node{a, b}, ref, g); got != total {
		t.Fatalf("share total %d after the restore, was %d", got, total)
	}
	waitFor(t, 10*time.Second, "the restore to end", func() bool { return len(a.Restoring()) == 0 })
	// A packed copy is read whole and found damaged before any of its
	// bytes count as verified: the restored copy's next pass counts them.
	waitFor(t, 10*time.Second, "the scrubber verifying bytes", func() bool { return a.Stats().Scrubbed > 0 })
}
