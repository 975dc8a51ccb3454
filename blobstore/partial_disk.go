package blobstore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore/baotree"
	"github.com/syncnode/syncnode/internal/writeback"
)

// diskPartial keeps a partial blob in partial/<hex>.data: its bytes so
// far, then its tree (for a blob of more than one group), as the blob's
// file will hold them, and after each Sync the verified groups in .have
// (one byte per group), written after the data is fsynced. The tree is
// written unsynced: on resume it counts only if it equals the verified
// tree the caller brings, so a torn one means starting over. At Commit the
// file is synced and renamed into place as the blob's: a fetched blob
// costs one file created, one fsync and one rename. A blob of one group
// has no tree stored (see Disk): one group, no progress to resume.
//
// A partial an earlier version began kept its tree beside the data, in
// .obao: it is resumed as well, its tree moved into the data file.
type diskPartial struct {
	*groups
	d    *Disk
	base string
	f    *os.File
	// written counts the bytes written since writeback was last started
	// (see package writeback): a Sync or Commit then finds little left to
	// flush, and the disk works while the network does.
	written atomic.Int64
}

// OpenPartial implements Store.
func (d *Disk) OpenPartial(ref syncnode.BlobRef, outboard []byte) (Partial, error) {
	g, err := newGroups(ref, outboard)
	if err != nil {
		return nil, err
	}
	if d.pack != nil && packable(g.size) {
		return d.parts.open(d, g), nil
	}
	base := filepath.Join(d.dir, "partial", ref.Hex())
	f, err := os.OpenFile(base+".data", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	fail := func(err error) (Partial, error) {
		f.Close()
		return nil, fmt.Errorf("blobstore: partial %s: %w", ref, err)
	}
	fileLen := g.size
	if !sizeOnly(g.size) {
		fileLen += int64(len(outboard))
		old, err := oldPartialTree(f, base, g.size, len(outboard))
		if err != nil {
			return fail(err)
		}
		if bytes.Equal(old, outboard) {
			if have, err := os.ReadFile(base + ".have"); err == nil && len(have) == len(g.have) {
				for i, b := range have {
					g.have[i] = b == 1
				}
			}
		} else {
			// New, or resumed with another tree: start over. (Only one
			// tree can match ref, so a differing old one was never
			// verified.)
			os.Remove(base + ".have")
		}
	}
	if err := f.Truncate(fileLen); err != nil {
		return fail(err)
	}
	if !sizeOnly(g.size) {
		if _, err := f.WriteAt(outboard, g.size); err != nil {
			return fail(err)
		}
	}
	// A tree an earlier version kept beside the data (or, for a blob of
	// one group, wrote at all) is in the data file now, or not needed. The
	// file is synced first when there is one, so that a power cut cannot
	// take the progress of its last Sync with it.
	if _, err := os.Stat(base + ".obao"); err == nil {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
		if err := os.Remove(base + ".obao"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fail(err)
		}
	}
	g.recheck(f)
	return &diskPartial{groups: g, d: d, base: base, f: f}, nil
}

// oldPartialTree returns the tree a partial of size bytes began with: the
// n bytes after its data in f, or the tree an earlier version kept beside
// it; nil if neither is there.
func oldPartialTree(f *os.File, base string, size int64, n int) ([]byte, error) {
	old, err := os.ReadFile(base + ".obao")
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return old, err
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() != size+int64(n) {
		return nil, err
	}
	old = make([]byte, n)
	if _, err := f.ReadAt(old, size); err != nil {
		return nil, err
	}
	return old, nil
}

func (p *diskPartial) Size() int64 { return p.size }

func (p *diskPartial) Missing() []Range { return p.missing() }

func (p *diskPartial) WriteAt(b []byte, off int64) error {
	first, last, err := p.verify(b, off)
	if err != nil {
		return err
	}
	if _, err := p.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("blobstore: partial %s: %w", p.ref, err)
	}
	p.mark(first, last)
	if p.written.Add(int64(len(b))) >= writeback.Every {
		p.written.Store(0)
		writeback.Start(p.f)
	}
	return nil
}

func (p *diskPartial) Sync() error {
	have := p.snapshot() // taken before the fsync: every group in it is on disk after
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("blobstore: partial %s: %w", p.ref, err)
	}
	b := make([]byte, len(have))
	for i, h := range have {
		if h {
			b[i] = 1
		}
	}
	// Written in place, not replaced: the file is a hint whose every
	// claim is verified again on resume, so a torn one costs a refetch of
	// some groups, and a sync each time is not a file created each time.
	if err := writeInPlace(p.base+".have", b); err != nil {
		return fmt.Errorf("blobstore: partial %s: %w", p.ref, err)
	}
	return nil
}

// writeInPlace writes b over the start of the file at path, creating it
// if needed, and fsyncs it.
func writeInPlace(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (p *diskPartial) Commit() (Info, error) {
	if err := p.complete(); err != nil {
		return Info{}, err
	}
	info := Info{Ref: p.ref, Size: p.size}
	if _, err := p.d.Stat(p.ref); err == nil {
		p.f.Close()
		return info, p.remove() // stored meanwhile: nothing to sync
	}
	// The tree was written unsynced when the partial began: synced with
	// the bytes before it becomes the blob's.
	if err := p.f.Sync(); err != nil {
		return Info{}, fmt.Errorf("blobstore: partial %s: %w", p.ref, err)
	}
	if err := p.f.Close(); err != nil {
		return Info{}, fmt.Errorf("blobstore: partial %s: %w", p.ref, err)
	}
	if err := p.d.finalise(p.ref, p.base+".data"); err != nil {
		return Info{}, err
	}
	// The file was renamed into place: only the progress file, if a Sync
	// wrote one, is left.
	if err := syscall.Unlink(p.base + ".have"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return info, fmt.Errorf("blobstore: %w", err)
	}
	return info, nil
}

func (p *diskPartial) Close() error { return p.f.Close() }

func (p *diskPartial) Abort() error {
	p.f.Close()
	return p.remove()
}

func (p *diskPartial) remove() error { return removePartial(p.base) }

// DropPartial implements PartialDropper.
func (d *Disk) DropPartial(ref syncnode.BlobRef) error {
	d.parts.drop(ref, nil)
	return removePartial(filepath.Join(d.dir, "partial", ref.Hex()))
}

// removePartial removes the files of the partial at base, the data last.
func removePartial(base string) error {
	for _, ext := range []string{".have", ".obao", ".data"} {
		if err := os.Remove(base + ext); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("blobstore: %w", err)
		}
	}
	return nil
}

// recheck verifies again every group the progress file claims, reading it
// from the data file: the progress file is a hint, so a damaged one (or
// damaged data) costs a refetch of the groups that fail, never a blob with
// unverified bytes.
func (g *groups) recheck(f *os.File) {
	buf := make([]byte, baotree.GroupSize)
	for i, h := range g.have {
		if !h {
			continue
		}
		off := int64(i) * baotree.GroupSize
		b := buf[:min(baotree.GroupSize, g.size-off)]
		if _, err := f.ReadAt(b, off); err != nil || baotree.VerifyGroups(g.ref.Hash(), g.ob, off, b) != nil {
			g.have[i] = false
		}
	}
}

// packPartial is a partial blob of at most PackMax bytes, for a store with
// packs: it is kept in memory and packed at Commit. A Close keeps it for
// the next OpenPartial of this opening (memParts), but its Sync keeps
// nothing on disk: a restart fetches it again, whole, which costs less
// than keeping its progress in a file of its own.
type packPartial struct {
	inMemory
	d *Disk
}

// memParts keeps the packPartials closed unfinished, for their fetches to
// resume: at most maxMemParts (the oldest dropped first), so fetches
// given up on cost at most maxMemParts*PackMax bytes of memory.
type memParts struct {
	mu    sync.Mutex
	m     map[syncnode.BlobRef]*packPartial
	order []syncnode.BlobRef
}

const maxMemParts = 64

// open returns the partial of g's blob kept, if it has the same tree,
// else a new one, kept.
func (mp *memParts) open(d *Disk, g *groups) *packPartial {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	if p, ok := mp.m[g.ref]; ok && bytes.Equal(p.ob, g.ob) {
		return p
	}
	if mp.m == nil {
		mp.m = map[syncnode.BlobRef]*packPartial{}
	}
	if _, ok := mp.m[g.ref]; !ok {
		mp.order = append(mp.order, g.ref)
	}
	p := &packPartial{inMemory: newInMemory(g), d: d}
	mp.m[g.ref] = p
	for len(mp.order) > maxMemParts {
		delete(mp.m, mp.order[0])
		mp.order = mp.order[1:]
	}
	return p
}

// drop forgets ref's partial: p only, if p is not nil.
func (mp *memParts) drop(ref syncnode.BlobRef, p *packPartial) {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	if q, ok := mp.m[ref]; !ok || p != nil && q != p {
		return
	}
	delete(mp.m, ref)
	mp.order = slices.DeleteFunc(mp.order, func(r syncnode.BlobRef) bool { return r == ref })
}

func (p *packPartial) Abort() error { p.d.parts.drop(p.ref, p); return nil }

func (p *packPartial) Commit() (Info, error) {
	if err := p.complete(); err != nil {
		return Info{}, err
	}
	if err := p.d.putPacked(p.ref, p.bytes(), p.ob); err != nil {
		return Info{}, err
	}
	p.d.parts.drop(p.ref, p)
	// A partial file an opening without packs began for it goes too.
	if err := p.d.DropPartial(p.ref); err != nil {
		p.d.log.Warn("a packed blob's earlier partial not removed", "blob", p.ref, "err", err)
	}
	return Info{Ref: p.ref, Size: p.size}, nil
}
