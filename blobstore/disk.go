package blobstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore/baotree"
	"github.com/syncnode/syncnode/internal/writeback"
)

// ErrLocked reports a blob directory already opened by another process.
var ErrLocked = errors.New("blobstore: directory is in use by another process")

// Disk is a Store in a directory:
//
//	blobs/<2 hex>/<64 hex>       a blob's bytes, then its Bao outboard tree if it has more than one group
//	partial/<64 hex>.data        a resumable verified write: the bytes so far, then the tree
//	partial/<64 hex>.have        its verified groups, a hint checked again on resume
//	blobs/<2 hex>/.put-*         small puts in progress, removed by the first listing after a restart
//	tmp/                         large puts in progress, removed at open
//	packs/<8 hex>.pack           blobs of at most PackMax bytes, packed (with a PackIndex, see pack)
//	LOCK                         held (flock) while the store is open
//
// A blob is visible only once its file is renamed into blobs/, fsynced
// before the rename and the directory after it, so a crash at any point
// leaves either the whole blob or none of it. Its tree is in the same
// file, after its bytes: a blob costs one file created, synced and renamed,
// not two. (The tree's length follows from the blob's, so the file's
// length gives both.) A blob of one group (at most baotree.GroupSize bytes)
// has a tree that is only its size: its file is its bytes alone.
//
// A put of at most putBufSize bytes is hashed in memory first and written
// beside its final place, in the blob's own directory: concurrent small
// puts then create and rename their files in 256 directories, not all in
// tmp/, whose lock they would queue on, and a rename within a directory
// does not take the file system's lock for renames across directories.
//
// Opened WithPacks, the store packs blobs of at most PackMax bytes, with
// their trees, into shared files instead (see pack): a small blob then
// costs no file of its own, and concurrent puts and fetches share their
// syncs. Such blobs stored as files before are read, listed and deleted
// as ever, and moved into a pack when put or fetched again.
//
// Stores written by earlier versions kept a tree beside its blob, in
// <64 hex>.obao, with the bytes alone in <64 hex>. Such blobs are read as
// they are; a put or fetch of one again writes it in the one-file form.
type Disk struct {
	dir  string
	lock *os.File
	log  *slog.Logger
	bufs putBuffers
	// putPrefix begins the names of small puts' files, with a token
	// drawn at open: a file with another was left by a crash.
	putPrefix string
	// durableShards holds the blob directories whose entries in blobs/
	// this opening has synced (see shardDir).
	durableShards sync.Map
	// dirSynced, if not nil, is told of every directory sync (tests).
	dirSynced func(dir string)
	// pack keeps blobs of at most PackMax bytes, if the store was opened
	// WithPacks, and parts their partial fetches.
	pack  *pack
	parts memParts
}

// DiskOption configures OpenDisk.
type DiskOption func(*diskOptions)

type diskOptions struct {
	packs PackIndex
}

// WithPacks has the store pack blobs of at most PackMax bytes into shared
// files, their places recorded in idx, which must be durable and kept
// with the store (a node keeps it in its database).
func WithPacks(idx PackIndex) DiskOption { return func(o *diskOptions) { o.packs = idx } }

var (
	_ Store          = (*Disk)(nil)
	_ PartialDropper = (*Disk)(nil)
)

// OpenDisk opens (creating if needed) the blob store in dir, takes its lock
// and removes temporary files that a crashed put left behind.
func OpenDisk(dir string, log *slog.Logger, opts ...DiskOption) (*Disk, error) {
	var o diskOptions
	for _, opt := range opts {
		opt(&o)
	}
	for _, sub := range []string{"blobs", "partial", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("blobstore: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrLocked, dir, err)
	}
	d := &Disk{dir: dir, lock: lock, log: log, putPrefix: ".put-" + rand.Text()[:8] + "-"}
	if n, err := d.gcTemp(); err != nil {
		lock.Close()
		return nil, err
	} else if n > 0 {
		log.Info("removed stale temporary files", "dir", dir, "count", n)
	}
	if o.packs != nil {
		if d.pack, err = openPack(filepath.Join(dir, "packs"), o.packs, time.Now, log); err != nil {
			lock.Close()
			return nil, err
		}
	}
	return d, nil
}

// Close stops the packs' compaction, if any, and releases the store's
// lock.
func (d *Disk) Close() error {
	var err error
	if d.pack != nil {
		err = d.pack.close()
	}
	return errors.Join(err, d.lock.Close())
}

func (d *Disk) gcTemp() (int, error) {
	tmp := filepath.Join(d.dir, "tmp")
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return 0, fmt.Errorf("blobstore: %w", err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
			return 0, fmt.Errorf("blobstore: gc: %w", err)
		}
	}
	return len(ents), nil
}

func (d *Disk) path(ref syncnode.BlobRef) string {
	h := ref.Hex()
	return filepath.Join(d.dir, "blobs", h[:2], h)
}

// Put implements Store.
func (d *Disk) Put(ctx context.Context, r io.Reader, want syncnode.BlobRef) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	first := d.bufs.get()
	defer d.bufs.put(first)
	n, ended, err := fill(r, first)
	if err == nil && !ended { // full: a blob of exactly putBufSize bytes ends here
		var one [1]byte
		var k int
		k, ended, err = fill(r, one[:])
		if k == 1 {
			return d.putLarge(ctx, io.MultiReader(bytes.NewReader(first), bytes.NewReader(one[:]), r), want)
		}
	}
	if err != nil {
		return Info{}, fmt.Errorf("blobstore: read input: %w", err)
	}
	return d.putSmall(first[:n], want)
}

// putSmall stores data, hashed in memory, through a file in the blob's
// own directory.
func (d *Disk) putSmall(data []byte, want syncnode.BlobRef) (Info, error) {
	var h baotree.Hasher
	h.Write(data)
	root, ob := h.Sum()
	info := Info{Ref: syncnode.RefFromHash(root), Size: int64(len(data))}
	if !want.IsZero() && info.Ref != want {
		return Info{}, fmt.Errorf("blobstore: %w: got %s, want %s", syncnode.ErrHashMismatch, info.Ref, want)
	}
	if d.pack != nil && packable(info.Size) {
		return info, d.putPacked(info.Ref, data, ob)
	}
	dir, err := d.shardDir(info.Ref)
	if err != nil {
		return Info{}, err
	}
	f, err := os.CreateTemp(dir, d.putPrefix)
	if err != nil {
		return Info{}, fmt.Errorf("blobstore: %w", err)
	}
	placed := false
	defer func() {
		f.Close()
		if !placed {
			os.Remove(f.Name())
		}
	}()
	if !sizeOnly(info.Size) {
		data = append(data, ob...) // the tree, after the bytes; data has room up to putBufSize only
	}
	if _, err := f.Write(data); err != nil {
		return Info{}, fmt.Errorf("blobstore: write: %w", err)
	}
	if err := f.Sync(); err != nil {
		return Info{}, fmt.Errorf("blobstore: sync: %w", err)
	}
	if err := d.finalise(info.Ref, f.Name()); err != nil {
		return Info{}, err
	}
	placed = true
	return info, nil
}

// putLarge stores the bytes of r, hashing them as they are written to a
// file in tmp/.
func (d *Disk) putLarge(ctx context.Context, r io.Reader, want syncnode.BlobRef) (Info, error) {
	f, err := os.CreateTemp(filepath.Join(d.dir, "tmp"), "put-")
	if err != nil {
		return Info{}, fmt.Errorf("blobstore: %w", err)
	}
	placed := false
	defer func() {
		f.Close()
		if !placed { // a placed file is gone from tmp/: no unlink to fail
			os.Remove(f.Name())
		}
	}()
	info, ob, err := hashing(ctx, &writeback.Writer{F: f}, r, want, &d.bufs)
	if err != nil {
		return Info{}, err
	}
	if !sizeOnly(info.Size) {
		if _, err := f.Write(ob); err != nil { // the tree, after the bytes
			return Info{}, fmt.Errorf("blobstore: write: %w", err)
		}
	}
	// A blob stored already is replaced by these verified bytes: putting
	// a damaged blob again repairs it.
	if err := f.Sync(); err != nil {
		return Info{}, fmt.Errorf("blobstore: sync: %w", err)
	}
	if err := d.finalise(info.Ref, f.Name()); err != nil {
		return Info{}, err
	}
	placed = true
	return info, nil
}

// shardDir returns the directory of ref's file, made if needed, with its
// entry in blobs/ on stable storage. That is made sure of once a
// directory per opening, by the first put in it, whoever made the
// directory: a put that found it made by another put still syncing
// blobs/, or by a process that crashed before syncing it, would
// otherwise return before the directory holding its blob is durable.
func (d *Disk) shardDir(ref syncnode.BlobRef) (string, error) {
	dir := filepath.Dir(d.path(ref))
	if _, ok := d.durableShards.Load(dir); ok {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("blobstore: %w", err)
	}
	if err := d.syncDir(filepath.Join(d.dir, "blobs")); err != nil {
		return "", err
	}
	d.durableShards.Store(dir, true)
	return dir, nil
}

// finalise moves a durable blob file (its bytes, then its tree) into
// place; the directory entry is on stable storage when it returns. A tree
// an earlier version kept beside the blob is removed after the rename is
// durable (a file system without a journal may keep the removal and lose
// the rename otherwise), and only at best: one left there, by a crash or
// a failed unlink, is told apart from a current one by the length it
// names.
func (d *Disk) finalise(ref syncnode.BlobRef, file string) error {
	final := d.path(ref)
	if _, err := d.shardDir(ref); err != nil {
		return err
	}
	if err := os.Rename(file, final); err != nil {
		return fmt.Errorf("blobstore: finalise %s: %w", ref, err)
	}
	if err := d.syncDir(filepath.Dir(final)); err != nil {
		return err
	}
	if err := syscall.Unlink(final + ".obao"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Warn("an earlier version's tree beside a blob not removed", "blob", ref, "err", err)
	}
	return nil
}

// syncDir fsyncs a directory, making its entries durable.
func syncDir(dir string) error { return syncFile(dir) }

// syncDir fsyncs a directory of the store, telling dirSynced first.
func (d *Disk) syncDir(dir string) error {
	if d.dirSynced != nil {
		d.dirSynced(dir)
	}
	return syncDir(dir)
}

// syncFile fsyncs the file or directory at path.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("blobstore: sync %s: %w", path, err)
	}
	return nil
}

// Stat implements Store. A file whose length fits no blob and its tree is
// damaged (ErrDamaged): only damage changes a stored file's length.
func (d *Disk) Stat(ref syncnode.BlobRef) (Info, error) {
	if e, ok, err := d.packed(ref); ok || err != nil {
		return Info{Ref: ref, Size: e.Size}, err
	}
	info, err := d.stat(ref)
	if err != nil {
		return Info{}, err
	}
	return info, nil
}

// stat is Stat, with the blob's Info also when the copy is damaged.
func (d *Disk) stat(ref syncnode.BlobRef) (Info, error) {
	fi, err := os.Stat(d.path(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("blobstore: %s: %w", ref, syncnode.ErrNotFound)
	}
	if err != nil {
		return Info{}, fmt.Errorf("blobstore: %w", err)
	}
	if sizeOnly(fi.Size()) {
		return Info{Ref: ref, Size: fi.Size()}, nil // one group: the file is the bytes
	}
	f, fm, _, err := d.inspect(ref, false)
	if f != nil {
		f.Close()
	}
	if err != nil && !errors.Is(err, ErrDamaged) {
		return Info{}, err
	}
	return Info{Ref: ref, Size: fm.size}, err
}

// form tells where in its file a stored blob's bytes end and where its
// tree is.
type form struct {
	size int64 // the blob's bytes are [0, size) of the file
	// tree is the blob's tree when it is not in the file: beside it (an
	// earlier version's form) or, for a blob of one group, its size.
	// inFile says it is in the file, from size to the end.
	tree   []byte
	inFile bool
}

// inspect opens ref's file and tells its form, reading its tree (unverified)
// if whole. It returns the file open also with an ErrDamaged, for its
// length. The form is that of the file opened: a put that replaces it
// meanwhile, and removes the tree an earlier version kept beside it,
// makes it look again rather than take the old bytes for a file without
// its tree.
func (d *Disk) inspect(ref syncnode.BlobRef, whole bool) (*os.File, form, []byte, error) {
	p := d.path(ref)
	for try := 0; ; try++ {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, form{}, nil, fmt.Errorf("blobstore: %s: %w", ref, syncnode.ErrNotFound)
		}
		if err != nil {
			return nil, form{}, nil, fmt.Errorf("blobstore: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, form{}, nil, fmt.Errorf("blobstore: %w", err)
		}
		fm, ob, err := formOf(ref, f, p, fi.Size(), whole)
		if errors.Is(err, ErrDamaged) && try < 5 {
			if now, serr := os.Stat(p); serr == nil && !os.SameFile(fi, now) {
				f.Close()
				continue // replaced while being looked at
			}
		}
		if err != nil && !errors.Is(err, ErrDamaged) {
			f.Close()
			return nil, form{}, nil, err
		}
		return f, fm, ob, err
	}
}

// formOf tells the form of f, the file p that holds ref, n bytes long,
// and reads its tree if whole. In order:
//
//   - A tree beside the file that names a blob of n bytes is an earlier
//     version's form.
//   - A file whose length is a blob's of more than one group and its
//     tree, with that blob's length at the start of the tree, is one
//     file; a tree beside it is one a crash left there, right after the
//     blob was written again in one file.
//   - A file of one group's length with no tree beside it is a small
//     blob (with whole false, one is taken as such without looking
//     beside it).
//   - Anything else is damaged; a tree beside it is still read as its
//     tree, the only one it has.
func formOf(ref syncnode.BlobRef, f *os.File, p string, n int64, whole bool) (form, []byte, error) {
	if sizeOnly(n) && !whole {
		return form{size: n}, nil, nil
	}
	old, oerr := readOldTree(p+".obao", whole)
	if oerr != nil && !errors.Is(oerr, fs.ErrNotExist) {
		if whole {
			return form{}, nil, fmt.Errorf("blobstore: %w", oerr)
		}
		// Listed as damaged, not a listing cut short: a read finds out.
		return form{size: n}, nil, fmt.Errorf("%w: %s: the tree beside it: %v", ErrDamaged, ref, oerr)
	}
	beside := oerr == nil
	if beside && len(old) >= 8 && int64(binary.LittleEndian.Uint64(old)) == n {
		return form{size: n, tree: old}, old, nil
	}
	if s, ok := dataSize(n); ok {
		var head [8]byte
		if _, err := f.ReadAt(head[:], s); err != nil {
			return form{}, nil, fmt.Errorf("blobstore: read %s: %w", ref, err)
		}
		if int64(binary.LittleEndian.Uint64(head[:])) == s {
			fm := form{size: s, inFile: true}
			if !whole {
				return fm, nil, nil
			}
			ob := make([]byte, n-s)
			if _, err := f.ReadAt(ob, s); err != nil {
				return form{}, nil, fmt.Errorf("blobstore: read %s: %w", ref, err)
			}
			return fm, ob, nil
		}
	}
	switch {
	case beside:
		return form{size: n, tree: old}, old, nil // damaged: Open finds the lengths differ
	case sizeOnly(n):
		return form{size: n, tree: sizeTree(n)}, sizeTree(n), nil
	}
	return form{size: n}, nil, fmt.Errorf("%w: %s: a file of %d bytes, no tree beside it nor after its bytes", ErrDamaged, ref, n)
}

// readOldTree reads a tree an earlier version kept beside its blob: whole,
// or only its first 8 bytes (the blob's length).
func readOldTree(p string, whole bool) ([]byte, error) {
	if whole {
		return os.ReadFile(p)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 8)
	n, err := io.ReadFull(f, b)
	if err != nil && n == 0 && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return b[:n], nil
}

// dataSize returns the length of the blob of more than one group whose
// bytes and tree make a file n bytes long, if there is one.
func dataSize(n int64) (int64, bool) {
	// A length plus its tree's grows with the length: search for n.
	lo, hi := int64(baotree.GroupSize+1), n
	for lo < hi {
		mid := lo + (hi-lo)/2
		if mid+baotree.OutboardSize(mid) < n {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, lo <= n && lo+baotree.OutboardSize(lo) == n
}

type fileReader struct {
	*os.File
	size int64
}

func (f fileReader) Size() int64 { return f.size }

// ModTime returns when a stored blob was written: the start of its
// least-recently-used clock after a restart.
func (d *Disk) ModTime(ref syncnode.BlobRef) (time.Time, error) {
	if e, ok, err := d.packed(ref); ok || err != nil {
		return time.Unix(0, e.Stored), err
	}
	fi, err := os.Stat(d.path(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, fmt.Errorf("blobstore: %s: %w", ref, syncnode.ErrNotFound)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("blobstore: %w", err)
	}
	return fi.ModTime(), nil
}

// Open implements Store. The tree is verified at open and every read
// against it: a damaged copy fails with ErrDamaged, never with other bytes.
func (d *Disk) Open(ref syncnode.BlobRef) (Reader, error) {
	if d.pack != nil {
		if data, _, _, ok, err := d.pack.get(ref); ok || err != nil {
			if err != nil {
				return nil, err
			}
			return bytesReader{bytes.NewReader(data)}, nil // verified whole
		}
	}
	f, fm, ob, err := d.inspect(ref, true)
	if err != nil {
		if f != nil {
			f.Close()
		}
		return nil, err
	}
	r, err := newVerifiedReader(ref, f, fm.size, f, ob)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// Outboard implements Store. The tree is verified against ref: a damaged
// one fails with ErrDamaged. The tree of a blob of one group is only its
// length, which says nothing of ref: the bytes are verified instead (at
// most one group), so a large blob cut short to one group's length gives
// ErrDamaged, not the tree of a small blob.
func (d *Disk) Outboard(ref syncnode.BlobRef) ([]byte, error) {
	if d.pack != nil {
		if _, tree, _, ok, err := d.pack.get(ref); ok || err != nil {
			if err != nil {
				return nil, err
			}
			return tree, nil
		}
	}
	f, fm, ob, err := d.inspect(ref, true)
	if f != nil {
		defer f.Close()
	}
	if err != nil {
		return nil, err
	}
	if err := checkTree(ref, ob); err != nil {
		return nil, err
	}
	if size, _ := baotree.Size(ob); sizeOnly(size) {
		if size != fm.size {
			return nil, fmt.Errorf("%w: %s: %d bytes stored, its tree says %d", ErrDamaged, ref, fm.size, size)
		}
		b := make([]byte, size)
		if _, err := f.ReadAt(b, 0); err != nil {
			return nil, fmt.Errorf("blobstore: read %s: %w", ref, err)
		}
		if err := baotree.VerifyGroups(ref.Hash(), ob, 0, b); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrDamaged, ref, err)
		}
	}
	return ob, nil
}

// List implements Store. With packs, it lists the files first and then
// the index, so that a blob moved from its file into a pack meanwhile is
// listed once: by the file pass if it was not packed yet, else by the
// index.
func (d *Disk) List(fn func(Info) error) error {
	shards, err := os.ReadDir(filepath.Join(d.dir, "blobs"))
	if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	var asFiles map[syncnode.BlobRef]bool // small blobs listed from their files
	for _, s := range shards {
		ents, err := os.ReadDir(filepath.Join(d.dir, "blobs", s.Name()))
		if err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
		for _, e := range ents {
			ref, ok := refFromName(e.Name())
			if !ok {
				d.removeStalePut(filepath.Join(d.dir, "blobs", s.Name()), e)
				continue
			}
			info, err := d.stat(ref)
			switch {
			case errors.Is(err, syncnode.ErrNotFound):
				continue // deleted meanwhile
			case errors.Is(err, ErrDamaged):
				// Listed all the same: a scrub that opens it finds the
				// damage and has the copy restored.
			case err != nil:
				return err
			}
			if d.pack != nil && packable(info.Size) {
				if _, ok, err := d.packed(ref); err != nil && !errors.Is(err, ErrDamaged) {
					return err
				} else if ok {
					continue // listed with the packs; its file is being removed
				}
				if asFiles == nil {
					asFiles = map[syncnode.BlobRef]bool{}
				}
				asFiles[ref] = true
			}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	if d.pack == nil {
		return nil
	}
	return d.pack.each(func(e PackEntry) error {
		if asFiles[e.Ref] {
			return nil
		}
		return fn(Info{Ref: e.Ref, Size: e.Size})
	})
}

// removeStalePut removes e, in dir, if it is a small put's file that a
// crash left: one named by another opening of the store.
func (d *Disk) removeStalePut(dir string, e fs.DirEntry) {
	if !strings.HasPrefix(e.Name(), ".put-") || strings.HasPrefix(e.Name(), d.putPrefix) {
		return
	}
	switch err := os.Remove(filepath.Join(dir, e.Name())); {
	case err == nil:
		d.log.Info("removed a put's file left by a crash", "file", e.Name())
	case !errors.Is(err, fs.ErrNotExist):
		d.log.Warn("a put's file left by a crash not removed", "file", e.Name(), "err", err)
	}
}

func refFromName(name string) (syncnode.BlobRef, bool) {
	if len(name) != 2*syncnode.HashSize || strings.Contains(name, ".") {
		return syncnode.BlobRef{}, false
	}
	b, err := hex.DecodeString(name)
	if err != nil {
		return syncnode.BlobRef{}, false
	}
	ref, err := syncnode.RefFromBytes(b)
	return ref, err == nil
}

// Delete implements Store.
func (d *Disk) Delete(ref syncnode.BlobRef) error {
	packed := false
	if d.pack != nil {
		var err error
		if packed, err = d.pack.delete(ref); err != nil {
			return err
		}
	}
	err := d.deleteFile(ref)
	if packed && errors.Is(err, syncnode.ErrNotFound) {
		return nil
	}
	return err
}

// deleteFile removes ref's file, if it has one.
func (d *Disk) deleteFile(ref syncnode.BlobRef) error {
	p := d.path(ref)
	err := os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore: %s: %w", ref, syncnode.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	// A blob of one group has no tree: unlink alone (os.Remove would try
	// rmdir after the unlink fails).
	if err := syscall.Unlink(p + ".obao"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore: %w", err)
	}
	return d.syncDir(filepath.Dir(p))
}

// sizeOnly reports whether a blob of size bytes has a tree that holds
// nothing but its size: such a tree is not stored, the data file's length
// gives it.
func sizeOnly(size int64) bool { return size <= baotree.GroupSize }

// sizeTree is the outboard tree of a blob of one group.
func sizeTree(size int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(size)) }

// packed returns ref's entry if it is packed.
func (d *Disk) packed(ref syncnode.BlobRef) (PackEntry, bool, error) {
	if d.pack == nil {
		return PackEntry{}, false, nil
	}
	return d.pack.stat(ref)
}

// putPacked packs data, whose tree is tree (verified: they hash to ref),
// and removes a file of ref stored before: a blob is packed or a file,
// one place to look.
func (d *Disk) putPacked(ref syncnode.BlobRef, data, tree []byte) error {
	if sizeOnly(int64(len(data))) {
		tree = nil // its length, known from the record
	}
	if err := d.pack.put(ref, data, tree); err != nil {
		return err
	}
	if _, err := os.Lstat(d.path(ref)); err == nil {
		if err := d.deleteFile(ref); err != nil && !errors.Is(err, syncnode.ErrNotFound) {
			d.log.Warn("a blob packed, its file not removed", "blob", ref, "err", err)
		}
	}
	return nil
}

// bytesReader is a Reader over bytes in memory, verified already.
type bytesReader struct{ *bytes.Reader }

func (bytesReader) Close() error { return nil }
