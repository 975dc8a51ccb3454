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
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/baotree"
	"github.com/syncnode/syncnode/blobstore/storetest"
	"github.com/syncnode/syncnode/internal/testkit"
)

// The crash tests run a helper process (this test binary, re-executed) that
// writes into a store and reports progress on stdout; the parent kills it
// with SIGKILL at a chosen point and then checks what the store shows.

const helperEnv = "BLOBSTORE_CRASH_HELPER"

// progressReader yields the bytes of r, printing the count after each read.
type progressReader struct {
	r   io.Reader
	off int
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.off += n
	if n > 0 {
		fmt.Printf("read %d\n", p.off)
	}
	return n, err
}

func TestCrashHelper(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process for the crash tests")
	}
	mode, dir, _ := strings.Cut(spec, ":")
	d, err := blobstore.OpenDisk(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	ctx := context.Background()
	switch mode {
	case "put":
		// One large put; the parent kills it part way. The bytes are
		// made as they are read: the helper is killed long before the
		// end, mostly.
		_, err = d.Put(ctx, &progressReader{r: testkit.RandomReader(64<<20, 1)}, syncnode.BlobRef{})
		fmt.Println("done")
	case "loop":
		// Many small puts; the parent kills at an arbitrary moment.
		for i := uint64(0); ; i++ {
			if _, err = d.Put(ctx, bytes.NewReader(testkit.RandomBytes(200<<10, 100+i)), syncnode.BlobRef{}); err != nil {
				break
			}
			fmt.Println("put", i)
		}
	case "partial":
		data := testkit.RandomBytes(256*baotree.GroupSize, 2)
		ref, ob := storetest.RefOf(data)
		p, err := d.OpenPartial(ref, ob)
		if err != nil {
			break
		}
		for g := int64(0); g < 256; g++ {
			off := g * baotree.GroupSize
			if err = p.WriteAt(data[off:off+baotree.GroupSize], off); err != nil {
				break
			}
			if g%8 == 7 {
				if err = p.Sync(); err != nil {
					break
				}
				fmt.Println("synced", g+1)
			}
		}
	}
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	select {} // wait to be killed
}

// runUntil starts the helper and kills it once stop returns true for a line
// it printed. It returns the last line seen.
func runUntil(t *testing.T, mode, dir string, stop func(line string) bool) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode+":"+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var last string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		last = sc.Text()
		if strings.HasPrefix(last, "error") {
			t.Fatalf("helper: %s", last)
		}
		if stop(last) {
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	return last
}

func reopen(t *testing.T, dir string) *blobstore.Disk {
	t.Helper()
	d, err := blobstore.OpenDisk(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// checkAll re-hashes every listed blob: each must match its ref exactly.
func checkAll(t *testing.T, d *blobstore.Disk) int {
	t.Helper()
	n := 0
	err := d.List(func(info blobstore.Info) error {
		r, err := d.Open(info.Ref)
		if err != nil {
			return err
		}
		defer r.Close()
		data, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
		if err != nil {
			return err
		}
		if ref, _ := storetest.RefOf(data); ref != info.Ref {
			return fmt.Errorf("blob %s holds bytes hashing to %s", info.Ref, ref)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCrashMidPutLeavesNoBlob(t *testing.T) {
	// The ref of the blob the helper puts, hashed once (64 MiB under -race
	// takes seconds).
	want, _ := storetest.RefOf(testkit.RandomBytes(64<<20, 1))
	// From 2 MiB on: the first MiB is read before a file is made.
	for _, killAt := range []int{2 << 20, 20 << 20, 63 << 20} {
		dir := t.TempDir()
		runUntil(t, "put", dir, func(line string) bool {
			n, _ := strconv.Atoi(strings.TrimPrefix(line, "read "))
			return n >= killAt
		})
		tmp, _ := os.ReadDir(filepath.Join(dir, "tmp"))
		if len(tmp) == 0 {
			t.Fatalf("kill at %d: expected a leftover temp file to collect", killAt)
		}
		d := reopen(t, dir)
		if n := checkAll(t, d); n != 0 {
			t.Fatalf("kill at %d: %d blobs visible after a crash mid-put", killAt, n)
		}
		if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
			t.Fatalf("kill at %d: %d temp files left after reopen", killAt, len(tmp))
		}
		if _, err := d.Stat(want); !errors.Is(err, syncnode.ErrNotFound) {
			t.Fatalf("kill at %d: the interrupted blob is visible: %v", killAt, err)
		}
	}
}

func TestCrashDuringPutsLeavesWholeBlobs(t *testing.T) {
	for i := range 5 {
		dir := t.TempDir()
		stopAfter := fmt.Sprintf("put %d", 3*i+2)
		runUntil(t, "loop", dir, func(line string) bool { return line == stopAfter })
		d := reopen(t, dir)
		if n := checkAll(t, d); n < 3*i+3 {
			t.Fatalf("round %d: %d whole blobs visible, want at least %d", i, n, 3*i+3)
		}
	}
}

func TestCrashMidPartialResumes(t *testing.T) {
	dir := t.TempDir()
	last := runUntil(t, "partial", dir, func(line string) bool { return line == "synced 128" })
	synced, _ := strconv.Atoi(strings.TrimPrefix(last, "synced "))
	d := reopen(t, dir)
	data := testkit.RandomBytes(256*baotree.GroupSize, 2)
	ref, ob := storetest.RefOf(data)
	if _, err := d.Stat(ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatal("partial blob visible after crash")
	}
	p, err := d.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	missing := p.Missing()
	if len(missing) == 0 || missing[0].Off < int64(synced)*baotree.GroupSize {
		t.Fatalf("resume lost synced progress: missing %v, synced %d groups", missing, synced)
	}
	for _, r := range missing {
		for off := r.Off; off < r.Off+r.Len; off += baotree.GroupSize {
			if err := p.WriteAt(data[off:off+baotree.GroupSize], off); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := checkAll(t, d); n != 1 {
		t.Fatalf("%d blobs after resumed commit", n)
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	reopen(t, dir)
	if _, err := blobstore.OpenDisk(dir, slog.New(slog.DiscardHandler)); !errors.Is(err, blobstore.ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

// TestDamagedProgressIsRechecked damages a partial blob's data and claims
// an unwritten group in its progress file: on resume both groups are
// missing again, and the committed blob is exact.
func TestDamagedProgressIsRechecked(t *testing.T) {
	dir := t.TempDir()
	d, data, ref, ob := halfWritten(t, dir, 3)
	base := filepath.Join(dir, "partial", ref.Hex())
	f, err := os.OpenFile(base+".data", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{data[baotree.GroupSize+9] ^ 0xff}, baotree.GroupSize+9) // group 1 damaged
	f.Close()
	have, _ := os.ReadFile(base + ".have")
	have[5] = 1 // group 5 claimed, never written
	os.WriteFile(base+".have", have, 0o600)

	p, err := d.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	want := []blobstore.Range{{Off: baotree.GroupSize, Len: baotree.GroupSize}, {Off: 4 * baotree.GroupSize, Len: 4 * baotree.GroupSize}}
	if got := p.Missing(); !slices.Equal(got, want) {
		t.Fatalf("missing after a damaged resume = %v, want %v", got, want)
	}
	for _, r := range p.Missing() {
		if err := p.WriteAt(data[r.Off:r.Off+r.Len], r.Off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := checkAll(t, d); n != 1 {
		t.Fatalf("%d blobs after commit", n)
	}
}

// A partial blob's tree is written without a sync, after its bytes in
// the partial's file (or, by earlier versions, beside it): after a power
// loss it may be torn. A torn one is never trusted; the resume starts
// over, and the committed blob and its tree are exact.
func TestTornPartialTreeStartsOver(t *testing.T) {
	for _, c := range []struct {
		name string
		tear func(t *testing.T, base string, size int64, ob []byte) error
	}{
		{"cut short", func(t *testing.T, base string, size int64, ob []byte) error {
			return os.Truncate(base+".data", size+int64(len(ob)/2))
		}},
		{"zeroed", func(t *testing.T, base string, size int64, ob []byte) error {
			f, err := os.OpenFile(base+".data", os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt(make([]byte, 64), size+int64(len(ob))-64)
			return err
		}},
		{"beside, cut short", func(t *testing.T, base string, size int64, ob []byte) error {
			if err := os.Truncate(base+".data", size); err != nil {
				return err
			}
			return os.WriteFile(base+".obao", ob[:len(ob)/2], 0o600)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			d, data, ref, ob := halfWritten(t, dir, 4)
			base := filepath.Join(dir, "partial", ref.Hex())
			if err := c.tear(t, base, int64(len(data)), ob); err != nil {
				t.Fatal(err)
			}
			p, err := d.OpenPartial(ref, ob)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := p.Missing(), []blobstore.Range{{Off: 0, Len: int64(len(data))}}; !slices.Equal(got, want) {
				t.Fatalf("missing after resuming with a torn tree = %v, want %v", got, want)
			}
			if err := p.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Commit(); err != nil {
				t.Fatal(err)
			}
			if n := checkAll(t, d); n != 1 {
				t.Fatalf("%d blobs after commit", n)
			}
			if left, _ := filepath.Glob(base + "*"); len(left) > 0 {
				t.Fatalf("partial files left after commit: %v", left)
			}
		})
	}
}

// A partial an earlier version began, its tree beside its bytes, resumes
// with its progress, and its blob is committed as one file.
func TestEarlierPartialResumes(t *testing.T) {
	dir := t.TempDir()
	d, data, ref, ob := halfWritten(t, dir, 5)
	base := filepath.Join(dir, "partial", ref.Hex())
	if err := os.Truncate(base+".data", int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base+".obao", ob, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := d.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	half := int64(len(data) / 2)
	if got, want := p.Missing(), []blobstore.Range{{Off: half, Len: half}}; !slices.Equal(got, want) {
		t.Fatalf("missing after resuming an earlier version's partial = %v, want %v", got, want)
	}
	if _, err := os.Stat(base + ".obao"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the tree beside the partial is still there: %v", err)
	}
	if err := p.WriteAt(data[half:], half); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := checkAll(t, d); n != 1 {
		t.Fatalf("%d blobs after commit", n)
	}
	if files := blobFiles(dir, ref); len(files) != 1 {
		t.Fatalf("files of the committed blob: %v, want one", files)
	}
}

// halfWritten opens a store in dir with a partial blob of 8 groups drawn
// from seed whose first 4 are written and synced, and closes the partial.
func halfWritten(t *testing.T, dir string, seed uint64) (*blobstore.Disk, []byte, syncnode.BlobRef, []byte) {
	t.Helper()
	d := reopen(t, dir)
	data := testkit.RandomBytes(8*baotree.GroupSize, seed)
	ref, ob := storetest.RefOf(data)
	p, err := d.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	for g := range 4 {
		off := int64(g) * baotree.GroupSize
		if err := p.WriteAt(data[off:off+baotree.GroupSize], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	return d, data, ref, ob
}

// TestCrashMidSmallPutsLeavesNothing kills a process that puts small
// blobs, then checks that the files of its puts in progress, written in
// the blobs' own directories, are removed by the first listing after the
// store is opened again, and that a small put begun after the open is
// left alone by that listing.
func TestCrashMidSmallPutsLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	runUntil(t, "loop", dir, func(line string) bool { return line == "put 5" })
	// A crash always leaves one where the kill came during a put; one is
	// made too, so that the test does not hang on the kill's timing.
	left := filepath.Join(dir, "blobs", "ab", ".put-left")
	if err := os.MkdirAll(filepath.Dir(left), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(left, []byte("half a put"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := reopen(t, dir)
	// A put of this opening, under way: named as its puts are.
	current := filepath.Join(dir, "blobs", "cd", blobstore.PutPrefix(d)+"under-way")
	if err := os.MkdirAll(filepath.Dir(current), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(current, []byte("a put under way"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n := checkAll(t, d); n < 6 {
		t.Fatalf("%d whole blobs after the crash, want at least 6", n)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "blobs", "*", ".put-*")); len(left) != 1 || left[0] != current {
		t.Fatalf("put files after the listing: %v, want only %s", left, current)
	}
}

// TestDropPartial discards a partial a fetch left to resume: its files
// go, a fetch after begins again, and dropping none is no error.
func TestDropPartial(t *testing.T) {
	dir := t.TempDir()
	d, data, ref, ob := halfWritten(t, dir, 6)
	if err := d.DropPartial(ref); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "partial", ref.Hex()+"*")); len(left) != 0 {
		t.Fatalf("partial files after the drop: %v", left)
	}
	if err := d.DropPartial(ref); err != nil {
		t.Fatalf("drop of none: %v", err)
	}
	p, err := d.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got, want := p.Missing(), []blobstore.Range{{Off: 0, Len: int64(len(data))}}; !slices.Equal(got, want) {
		t.Fatalf("missing after the drop = %v, want %v", got, want)
	}
	m := blobstore.NewMem()
	mp, err := m.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	if err := mp.WriteAt(data[:baotree.GroupSize], 0); err != nil {
		t.Fatal(err)
	}
	mp.Close()
	if err := m.DropPartial(ref); err != nil {
		t.Fatal(err)
	}
	if mp, err = m.OpenPartial(ref, ob); err != nil || len(mp.Missing()) != 1 || mp.Missing()[0].Off != 0 {
		t.Fatalf("memory partial after the drop: %v, %v", mp.Missing(), err)
	}
}
