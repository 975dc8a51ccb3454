package blobstore_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/baotree"
	"github.com/syncnode/syncnode/blobstore/storetest"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/packindex"
	"github.com/syncnode/syncnode/internal/powercut"
	"github.com/syncnode/syncnode/internal/testkit"
)

// packedStore is a Disk with packs, its index in a badger of its own.
type packedStore struct {
	*blobstore.Disk
	db    *badger.DB
	dir   string
	index *countingIndex
	once  sync.Once
}

// countingIndex counts the batches applied to a real index.
type countingIndex struct {
	*packindex.Index
	applied atomic.Int64
}

func (c *countingIndex) Apply(b blobstore.PackBatch) error {
	c.applied.Add(1)
	return c.Index.Apply(b)
}

// openPacked opens (or reopens) the packed store in dir, closed when the
// test ends unless closed before.
func openPacked(t testing.TB, dir string) *packedStore {
	t.Helper()
	db, err := kv.Open(filepath.Join(dir, "db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	idx := &countingIndex{Index: packindex.New(db)}
	d, err := blobstore.OpenDisk(filepath.Join(dir, "blobs"), slog.New(slog.DiscardHandler), blobstore.WithPacks(idx))
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	s := &packedStore{Disk: d, db: db, dir: dir, index: idx}
	t.Cleanup(func() { s.close(t) })
	return s
}

// close closes the store, then its database, once.
func (s *packedStore) close(t testing.TB) {
	s.once.Do(func() {
		if err := s.Disk.Close(); err != nil {
			t.Error(err)
		}
		if err := s.db.Close(); err != nil {
			t.Error(err)
		}
	})
}

func TestPackedConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blobstore.Store { return openPacked(t, t.TempDir()) })
}

// files lists the regular files under dir/blobs/blobs and dir/blobs/packs.
func storeFiles(t *testing.T, dir string) (blobs, packs []string) {
	t.Helper()
	for sub, out := range map[string]*[]string{"blobs": &blobs, "packs": &packs} {
		filepath.WalkDir(filepath.Join(dir, "blobs", sub), func(p string, e os.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				*out = append(*out, p)
			}
			return nil
		})
	}
	return blobs, packs
}

func readAll(t *testing.T, s blobstore.Store, ref syncnode.BlobRef) ([]byte, error) {
	t.Helper()
	r, err := s.Open(ref)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
}

// Blobs of at most PackMax bytes go into packs, not files of their own;
// larger blobs are files as before. Both read back, list, stat, give
// their trees and survive a reopen.
func TestSmallBlobsArePacked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openPacked(t, dir)
	sizes := []int{0, 1, 4 << 10, baotree.GroupSize, baotree.GroupSize + 1, 200 << 10, blobstore.PackMax, blobstore.PackMax + 1, 1 << 20}
	refs := map[syncnode.BlobRef][]byte{}
	before := time.Now().Add(-time.Second)
	for i, n := range sizes {
		data := testkit.RandomBytes(n, uint64(i)+7)
		info, err := s.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		refs[info.Ref] = data
	}
	blobs, packs := storeFiles(t, dir)
	if len(blobs) != 2 || len(packs) != 1 {
		t.Fatalf("files %v and packs %v: want the two blobs of more than one group as files, the rest in one pack", blobs, packs)
	}
	check := func(s *packedStore) {
		listed := 0
		if err := s.List(func(i blobstore.Info) error {
			listed++
			if int64(len(refs[i.Ref])) != i.Size {
				return fmt.Errorf("listed %s of %d bytes", i.Ref, i.Size)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if listed != len(refs) {
			t.Fatalf("listed %d blobs, want %d", listed, len(refs))
		}
		for ref, data := range refs {
			got, err := readAll(t, s, ref)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %s: %v (equal %v)", ref, err, bytes.Equal(got, data))
			}
			_, want := storetest.RefOf(data)
			if tree, err := s.Outboard(ref); err != nil || !bytes.Equal(tree, want) {
				t.Fatalf("tree of %s (%d bytes): %v", ref, len(data), err)
			}
			mt, err := s.ModTime(ref)
			if err != nil || mt.Before(before) || mt.After(time.Now()) {
				t.Fatalf("ModTime of %s = %v, %v", ref, mt, err)
			}
		}
	}
	check(s)
	s.close(t)
	check(openPacked(t, dir))
}

// Concurrent small puts share their syncs: far fewer index batches than
// puts, each put durable when it returns (checked by a power cut below).
func TestConcurrentPackedPutsShareSyncs(t *testing.T) {
	t.Parallel()
	s := openPacked(t, t.TempDir())
	const workers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				data := testkit.RandomBytes(4<<10, uint64(w*1000+i))
				if _, err := s.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	puts, batches := workers*each, s.index.applied.Load()
	t.Logf("%d puts in %d durable batches", puts, batches)
	if batches >= int64(puts) {
		t.Fatalf("%d puts took %d durable batches: syncs are not shared", puts, batches)
	}
	if n := count(t, s); n != puts {
		t.Fatalf("%d blobs listed, want %d", n, puts)
	}
}

func count(t *testing.T, s blobstore.Store) int {
	n := 0
	if err := s.List(func(blobstore.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// Deleting most of a pack's blobs compacts it: the file goes, the blobs
// kept are read from their new place, now and after a reopen; a delete
// and a put of the same blob racing a compaction end as the last of them.
func TestPackCompaction(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openPacked(t, dir)
	removed := make(chan uint32, 16)
	blobstore.OnPackCompacted(s.Disk, func(n uint32) { removed <- n })
	blobstore.SetPackLimit(s.Disk, 64<<10) // about 15 blobs of 4 KiB a pack
	var refs []syncnode.BlobRef
	data := map[syncnode.BlobRef][]byte{}
	for i := range 60 {
		b := testkit.RandomBytes(4<<10, uint64(i)+1000)
		info, err := s.Put(t.Context(), bytes.NewReader(b), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, info.Ref)
		data[info.Ref] = b
	}
	_, packs := storeFiles(t, dir)
	if len(packs) < 4 {
		t.Fatalf("%d packs, want at least 4", len(packs))
	}
	// Delete two of every three blobs of the first packs.
	kept := map[syncnode.BlobRef]bool{}
	for i, ref := range refs[:45] {
		if i%3 == 0 {
			kept[ref] = true
			continue
		}
		if err := s.Delete(ref); err != nil {
			t.Fatal(err)
		}
	}
	for _, ref := range refs[45:] {
		kept[ref] = true
	}
	for i := range 3 { // the three packs two thirds dead
		select {
		case <-removed:
		case <-time.After(20 * time.Second):
			t.Fatalf("%d packs compacted of the three two thirds dead", i)
		}
	}
	check := func(s *packedStore) {
		t.Helper()
		for _, ref := range refs {
			got, err := readAll(t, s, ref)
			switch {
			case kept[ref] && (err != nil || !bytes.Equal(got, data[ref])):
				t.Fatalf("kept blob %s: %v", ref, err)
			case !kept[ref] && !errors.Is(err, syncnode.ErrNotFound):
				t.Fatalf("deleted blob %s reads: %v", ref, err)
			}
		}
		if n := count(t, s); n != len(kept) {
			t.Fatalf("%d blobs listed, want %d", n, len(kept))
		}
	}
	check(s)
	s.close(t)
	s = openPacked(t, dir)
	check(s)
	_, after := storeFiles(t, dir)
	if len(after) >= len(packs) {
		t.Fatalf("packs %d before the deletes, %d after their compaction", len(packs), len(after))
	}
}

// Deletes and puts racing compactions, in both orders, lose no blob kept.
func TestPackCompactionRacesPutsAndDeletes(t *testing.T) {
	t.Parallel()
	s := openPacked(t, t.TempDir())
	blobstore.SetPackLimit(s.Disk, 32<<10)
	var compactions atomic.Int64
	blobstore.OnPackCompacted(s.Disk, func(uint32) { compactions.Add(1) })
	const workers, each = 4, 120
	var wg sync.WaitGroup
	var mu sync.Mutex
	final := map[syncnode.BlobRef][]byte{}
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				// A few blobs shared by all workers (put, deleted, put
				// again by others), most of them each worker's own.
				seed := uint64(w*10000 + i)
				if i%5 == 0 {
					seed = uint64(i % 7)
				}
				b := testkit.RandomBytes(2<<10, seed)
				info, err := s.Put(t.Context(), bytes.NewReader(b), syncnode.BlobRef{})
				if err != nil {
					t.Error(err)
					return
				}
				if seed < 7 {
					continue // shared: neither deleted nor checked as kept
				}
				if i%2 == 1 {
					if err := s.Delete(info.Ref); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				mu.Lock()
				final[info.Ref] = b
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	testkit.WaitFor(t, 20*time.Second, "a compaction", func() bool { return compactions.Load() > 0 })
	for ref, b := range final {
		got, err := readAll(t, s, ref)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("blob %s put and kept: %v", ref, err)
		}
	}
}

// A damaged packed blob reads as damaged, never as other bytes; putting
// it again repairs it. A pack whose damaged record cannot be moved is
// kept, with its entry, for the scrub to restore.
func TestPackedDamage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openPacked(t, dir)
	blobstore.SetPackLimit(s.Disk, 16<<10)
	var refs []syncnode.BlobRef
	var datas [][]byte
	for i := range 12 {
		b := testkit.RandomBytes(3<<10, uint64(i)+50)
		info, err := s.Put(t.Context(), bytes.NewReader(b), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		refs, datas = append(refs, info.Ref), append(datas, b)
	}
	_, packs := storeFiles(t, dir)
	first := packs[0]
	raw, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte of the first blob's bytes, and one of the second's header.
	i0 := bytes.Index(raw, datas[0])
	i1 := bytes.Index(raw, datas[1])
	if i0 < 0 || i1 < 0 {
		t.Fatal("blobs not found in the first pack")
	}
	f, err := os.OpenFile(first, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{raw[i0+100] ^ 1}, int64(i0+100))
	f.WriteAt([]byte{raw[i1-20] ^ 1}, int64(i1-20))
	f.Close()
	for _, i := range []int{0, 1} {
		if _, err := readAll(t, s, refs[i]); !errors.Is(err, blobstore.ErrDamaged) {
			t.Fatalf("damaged blob %d reads: %v", i, err)
		}
		if _, err := s.Outboard(refs[i]); !errors.Is(err, blobstore.ErrDamaged) {
			t.Fatalf("damaged blob %d's tree: %v", i, err)
		}
	}
	// Repair the first by putting it again; then delete the rest of the
	// first pack but the second blob, whose header is damaged.
	if _, err := s.Put(t.Context(), bytes.NewReader(datas[0]), refs[0]); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t, s, refs[0]); err != nil || !bytes.Equal(got, datas[0]) {
		t.Fatalf("repaired blob: %v", err)
	}
	for i := 2; i < len(refs); i++ {
		if err := s.Delete(refs[i]); err != nil {
			t.Fatal(err)
		}
	}
	s.close(t)
	s = openPacked(t, dir) // compacts at open
	time.Sleep(200 * time.Millisecond)
	if _, err := os.Stat(first); err != nil {
		t.Fatalf("the pack holding a damaged record was removed: %v", err)
	}
	if _, err := readAll(t, s, refs[1]); !errors.Is(err, blobstore.ErrDamaged) {
		t.Fatalf("blob in a damaged record after compaction: %v, want ErrDamaged (kept for a scrub)", err)
	}
	if got, err := readAll(t, s, refs[0]); err != nil || !bytes.Equal(got, datas[0]) {
		t.Fatalf("repaired blob after compaction: %v", err)
	}
}

// A blob of one group stored as a file (before packs) is read, listed
// once, and moved into a pack when put again.
func TestFileBlobsMoveIntoPacks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data, info := putAsFile(t, dir)
	s := openPacked(t, dir)
	if got, err := readAll(t, s, info.Ref); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file blob read with packs: %v", err)
	}
	if n := count(t, s); n != 1 {
		t.Fatalf("listed %d", n)
	}
	if _, err := s.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{}); err != nil {
		t.Fatal(err)
	}
	blobs, packs := storeFiles(t, dir)
	if len(blobs) != 0 || len(packs) != 1 {
		t.Fatalf("after a put again: files %v, packs %v", blobs, packs)
	}
	if n := count(t, s); n != 1 {
		t.Fatalf("listed %d after the move", n)
	}
	if err := s.Delete(info.Ref); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(info.Ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// putAsFile puts a blob of 5 KiB into the store in dir opened without
// packs, as a file of its own, as an earlier version stored it.
func putAsFile(t *testing.T, dir string) ([]byte, blobstore.Info) {
	t.Helper()
	plain, err := blobstore.OpenDisk(filepath.Join(dir, "blobs"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	data := testkit.RandomBytes(5<<10, 9)
	info, err := plain.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{})
	if err != nil {
		t.Fatal(err)
	}
	return data, info
}

// A fetched blob of at most PackMax bytes is packed at commit, with no
// partial file; its groups are verified as they come.
func TestPackedPartial(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openPacked(t, dir)
	big := testkit.RandomBytes(blobstore.PackMax-5, 4)
	bigRef, bigTree := storetest.RefOf(big)
	bp, err := s.OpenPartial(bigRef, bigTree)
	if err != nil {
		t.Fatal(err)
	}
	for off := len(big) / baotree.GroupSize * baotree.GroupSize; off >= 0; off -= baotree.GroupSize {
		g := big[off:min(len(big), off+baotree.GroupSize)]
		if off == baotree.GroupSize*3 {
			bad := bytes.Clone(g)
			bad[0] ^= 1
			if err := bp.WriteAt(bad, int64(off)); !errors.Is(err, syncnode.ErrHashMismatch) {
				t.Fatalf("a wrong group written: %v", err)
			}
		}
		if err := bp.WriteAt(g, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bp.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t, s, bigRef); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("fetched blob of %d bytes: %v", len(big), err)
	}
	data := testkit.RandomBytes(9<<10, 3)
	ref, ob := storetest.RefOf(data)
	p, err := s.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(data)
	bad[7] ^= 1
	if err := p.WriteAt(bad, 0); !errors.Is(err, syncnode.ErrHashMismatch) {
		t.Fatalf("wrong bytes written: %v", err)
	}
	if _, err := p.Commit(); !errors.Is(err, blobstore.ErrIncomplete) {
		t.Fatalf("commit of nothing: %v", err)
	}
	if err := p.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, err := readAll(t, s, ref); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fetched blob: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "blobs", "partial")); len(ents) != 0 {
		t.Fatalf("partial files left: %v", ents)
	}
}

const packCutEnv = "SYNCNODE_PACK_CUT_HELPER"

// TestPackCutHelper runs in a child process, as what mmaps a file on a
// power-cut file system must (see package powercut), on the packed store
// at $SYNCNODE_PACK_CUT_HELPER (mode:dir). Mode put puts small blobs from
// 8 goroutines, printing each one acknowledged, and deletes every fifth
// after its put, until killed. Mode check:dir:file opens every blob
// listed in file and every blob the store lists, verifying each, and
// prints "checked N".
func TestPackCutHelper(t *testing.T) {
	spec := os.Getenv(packCutEnv)
	if spec == "" {
		t.Skip("helper process for TestPowerCutKeepsPackedPuts")
	}
	fail := func(err error) {
		fmt.Println("error", err)
		os.Exit(2)
	}
	parts := strings.Split(spec, ":")
	db, err := kv.Open(filepath.Join(parts[1], "db"), slog.New(slog.DiscardHandler))
	if err != nil {
		fail(err)
	}
	d, err := blobstore.OpenDisk(filepath.Join(parts[1], "blobs"), slog.New(slog.DiscardHandler), blobstore.WithPacks(packindex.New(db)))
	if err != nil {
		fail(err)
	}
	if parts[0] == "check" {
		list, err := os.ReadFile(parts[2])
		if err != nil {
			fail(err)
		}
		for _, line := range strings.Fields(string(list)) {
			ref, err := syncnode.ParseBlobRef(line)
			if err != nil {
				fail(err)
			}
			r, err := d.Open(ref)
			if err != nil {
				fail(fmt.Errorf("blob %s, acknowledged before the cut: %w", ref, err))
			}
			r.Close()
		}
		n := checkAll(t, d)
		if err := errors.Join(d.Close(), db.Close()); err != nil {
			fail(err)
		}
		fmt.Println("checked", n)
		os.Exit(0)
	}
	blobstore.SetPackLimit(d, 256<<10)
	var mu sync.Mutex
	for w := range 8 {
		go func() {
			for i := 0; ; i++ {
				seed := uint64(time.Now().UnixNano()) + uint64(w)<<40
				info, err := d.Put(context.Background(), bytes.NewReader(testkit.RandomBytes(1+int(seed%(16<<10)), seed)), syncnode.BlobRef{})
				verb := "acked"
				if err == nil && i%5 == 4 {
					err, verb = d.Delete(info.Ref), "deleted"
				}
				mu.Lock()
				if err != nil {
					fail(err)
				}
				fmt.Println(verb, info.Ref)
				mu.Unlock()
			}
		}()
	}
	select {}
}

// packHelper starts the helper in mode on dir; it is killed when the
// test ends.
func packHelper(t *testing.T, mode string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPackCutHelper$")
	cmd.Env = append(os.Environ(), packCutEnv+"="+mode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewScanner(out)
}

// The power goes while small blobs are packed, deleted and compacted:
// every put acknowledged and not deleted since reads back whole after the
// restart, and nothing unverified is ever read.
func TestPowerCutKeepsPackedPuts(t *testing.T) {
	testkit.SkipShortUnless(t, "SYNCNODE_FUSE_TESTS", "root and FUSE")
	if err := powercut.Available(); err != nil {
		t.Skipf("power cuts need FUSE: %v", err)
	}
	base := t.TempDir()
	back, mnt := filepath.Join(base, "back"), filepath.Join(base, "mnt")
	for _, d := range []string{back, mnt} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := powercut.Mount(back, mnt, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Unmount() })
	dir := filepath.Join(mnt, "store")
	acked := map[syncnode.BlobRef]bool{}
	for round := range 3 {
		cmd, sc := packHelper(t, "put:"+dir)
		lines := 0
		for lines < 300+200*round && sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 {
				continue
			}
			if f[0] == "error" {
				t.Fatalf("helper: %s", sc.Text())
			}
			ref, err := syncnode.ParseBlobRef(f[1])
			if err != nil {
				t.Fatal(err)
			}
			acked[ref] = f[0] == "acked"
			lines++
		}
		cmd.Process.Kill()
		cmd.Wait()
		if err := fs.Cut(); err != nil {
			t.Fatal(err)
		}
		var list strings.Builder
		kept := 0
		for ref, live := range acked {
			if live {
				fmt.Fprintln(&list, ref)
				kept++
			}
		}
		file := filepath.Join(base, "acked")
		if err := os.WriteFile(file, []byte(list.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		_, sc = packHelper(t, "check:"+dir+":"+file)
		var last string
		for sc.Scan() {
			last = sc.Text()
		}
		if !strings.HasPrefix(last, "checked") {
			t.Fatalf("round %d, after a cut with %d bytes of %d files never synced: %s", round, fs.Stats().DroppedBytes, fs.Stats().DroppedFiles, last)
		}
		t.Logf("round %d: cut dropped %d bytes of %d files; %d blobs acknowledged and kept read back; %s", round, fs.Stats().DroppedBytes, fs.Stats().DroppedFiles, kept, last)
	}
}
