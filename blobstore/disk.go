package blobstore

import (
	"context"
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
//	blobs/<2 hex>/<64 hex>       a final blob's bytes
//	blobs/<2 hex>/<64 hex>.obao  its Bao outboard tree, if it has more than one group
//	partial/<64 hex>{.data,.obao,.have}  a resumable verified write
//	tmp/                         puts in progress, removed at open
//	LOCK                         held (flock) while the store is open
//
// A blob is visible only once its files are renamed into blobs/, data
// last, each fsynced before the rename and the directory after it, so a
// crash at any point leaves either the whole blob or none of it. A blob of
// one group (at most baotree.GroupSize bytes) has a tree that is only its
// size, which the data file's length gives: it is one file, not two, which
// halves the files created and synced for small blobs.
type Disk struct {
	dir  string
	lock *os.File
	log  *slog.Logger
	bufs putBuffers
}

var _ Store = (*Disk)(nil)

// OpenDisk opens (creating if needed) the blob store in dir, takes its lock
// and removes temporary files that a crashed put left behind.
func OpenDisk(dir string, log *slog.Logger) (*Disk, error) {
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
	d := &Disk{dir: dir, lock: lock, log: log}
	if n, err := d.gcTemp(); err != nil {
		lock.Close()
		return nil, err
	} else if n > 0 {
		log.Info("removed stale temporary files", "dir", dir, "count", n)
	}
	return d, nil
}

// Close releases the store's lock.
func (d *Disk) Close() error { return d.lock.Close() }

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
	tmp := filepath.Join(d.dir, "tmp")
	f, err := os.CreateTemp(tmp, "put-")
	if err != nil {
		return Info{}, fmt.Errorf("blobstore: %w", err)
	}
	tree, placed := "", false
	defer func() {
		f.Close()
		if !placed { // a placed file is gone from tmp/: no unlink to fail
			os.Remove(f.Name())
			if tree != "" {
				os.Remove(tree)
			}
		}
	}()
	info, ob, err := hashing(ctx, &writeback.Writer{F: f}, r, want, &d.bufs)
	if err != nil {
		return Info{}, err
	}
	if !sizeOnly(info.Size) {
		if tree, err = writeTemp(tmp, ob); err != nil {
			return Info{}, err
		}
	}
	// A blob stored already is replaced by these verified bytes: putting
	// a damaged blob again repairs it.
	if err := syncBoth(f, tree); err != nil {
		return Info{}, err
	}
	if err := d.finalise(info.Ref, f.Name(), tree); err != nil {
		return Info{}, err
	}
	placed = true
	return info, nil
}

// finalise moves a durable data file and its durable tree file (none for
// a blob of one group) into place; the directory entries are on stable
// storage when it returns. The tree is renamed first, so a visible blob
// always has its tree.
func (d *Disk) finalise(ref syncnode.BlobRef, data, tree string) error {
	final := d.path(ref)
	if _, err := os.Stat(filepath.Dir(final)); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
		if err := syncDir(filepath.Join(d.dir, "blobs")); err != nil {
			return err
		}
	}
	if tree != "" {
		if err := os.Rename(tree, final+".obao"); err != nil {
			return fmt.Errorf("blobstore: finalise %s: %w", ref, err)
		}
	}
	if err := os.Rename(data, final); err != nil {
		if _, serr := os.Stat(final); tree != "" && errors.Is(serr, fs.ErrNotExist) {
			os.Remove(final + ".obao") // a tree without its bytes, which no copy uses
		}
		return fmt.Errorf("blobstore: finalise %s: %w", ref, err)
	}
	return syncDir(filepath.Dir(final))
}

// syncBoth fsyncs f and, at the same time, the file at path if there is
// one: two fsyncs in flight together take about as long as one.
func syncBoth(f *os.File, path string) error {
	other := make(chan error, 1)
	if path == "" {
		other <- nil
	} else {
		go func() { other <- syncFile(path) }()
	}
	err := f.Sync()
	if oerr := <-other; err == nil && oerr != nil {
		return oerr
	}
	if err != nil {
		return fmt.Errorf("blobstore: sync: %w", err)
	}
	return nil
}

// writeTemp writes b to a new file in dir, unsynced, and returns its path.
func writeTemp(dir string, b []byte) (string, error) {
	f, err := os.CreateTemp(dir, "w-")
	if err != nil {
		return "", fmt.Errorf("blobstore: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("blobstore: write: %w", err)
	}
	return f.Name(), nil
}

// writeFileAtomic writes b to a temp file in tmpDir, fsyncs it and renames
// it to path.
func writeFileAtomic(path string, b []byte, tmpDir string) error {
	name, err := writeTemp(tmpDir, b)
	if err != nil {
		return err
	}
	if err := syncFile(name); err != nil {
		os.Remove(name)
		return err
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return fmt.Errorf("blobstore: write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// syncDir fsyncs a directory, making its entries durable.
func syncDir(dir string) error { return syncFile(dir) }

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

// Stat implements Store. A blob of more than one group whose tree is
// missing is damaged (ErrDamaged): a tree is renamed into place before
// its bytes, so only damage leaves the bytes without it.
func (d *Disk) Stat(ref syncnode.BlobRef) (Info, error) {
	info, err := d.stat(ref)
	if err != nil {
		return Info{}, err
	}
	return info, nil
}

// stat is Stat, with the blob's Info also when the copy is damaged.
func (d *Disk) stat(ref syncnode.BlobRef) (Info, error) {
	p := d.path(ref)
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("blobstore: %s: %w", ref, syncnode.ErrNotFound)
	}
	if err != nil {
		return Info{}, fmt.Errorf("blobstore: %w", err)
	}
	info := Info{Ref: ref, Size: fi.Size()}
	if !sizeOnly(fi.Size()) {
		if _, err := os.Stat(p + ".obao"); errors.Is(err, fs.ErrNotExist) {
			return info, fmt.Errorf("%w: %s: %d bytes and no tree", ErrDamaged, ref, fi.Size())
		} else if err != nil {
			return Info{}, fmt.Errorf("blobstore: %w", err)
		}
	}
	return info, nil
}

type fileReader struct {
	*os.File
	size int64
}

func (f fileReader) Size() int64 { return f.size }

// ModTime returns when a stored blob was written: the start of its
// least-recently-used clock after a restart.
func (d *Disk) ModTime(ref syncnode.BlobRef) (time.Time, error) {
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
	ob, err := d.readTree(ref)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(d.path(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blobstore: %s: %w", ref, syncnode.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	r, err := newVerifiedReader(ref, f, fi.Size(), f, ob)
	if err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// readTree reads a stored blob's outboard tree, unverified. A blob of one
// group has none stored: its tree is its size. A tree on disk is read
// whatever the size, so a large blob cut short to one group's length
// is damaged, not a small blob.
func (d *Disk) readTree(ref syncnode.BlobRef) ([]byte, error) {
	fi, err := os.Stat(d.path(ref))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blobstore: %s: %w", ref, syncnode.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	b, err := os.ReadFile(d.path(ref) + ".obao")
	switch {
	case err == nil:
		return b, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("blobstore: %w", err)
	case sizeOnly(fi.Size()):
		return sizeTree(fi.Size()), nil
	}
	return nil, fmt.Errorf("%w: %s: %d bytes and no tree", ErrDamaged, ref, fi.Size())
}

// Outboard implements Store. The tree is verified against ref: a damaged
// one fails with ErrDamaged.
func (d *Disk) Outboard(ref syncnode.BlobRef) ([]byte, error) {
	ob, err := d.readTree(ref)
	if err != nil {
		return nil, err
	}
	if err := checkTree(ref, ob); err != nil {
		return nil, err
	}
	return ob, nil
}

// List implements Store.
func (d *Disk) List(fn func(Info) error) error {
	shards, err := os.ReadDir(filepath.Join(d.dir, "blobs"))
	if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	for _, s := range shards {
		ents, err := os.ReadDir(filepath.Join(d.dir, "blobs", s.Name()))
		if err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
		for _, e := range ents {
			ref, ok := refFromName(e.Name())
			if !ok {
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
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
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
	return syncDir(filepath.Dir(p))
}

// sizeOnly reports whether a blob of size bytes has a tree that holds
// nothing but its size: such a tree is not stored, the data file's length
// gives it.
func sizeOnly(size int64) bool { return size <= baotree.GroupSize }

// sizeTree is the outboard tree of a blob of one group.
func sizeTree(size int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(size)) }
