package blobstore

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore/baotree"
	"github.com/syncnode/syncnode/internal/writeback"
)

// diskPartial keeps a partial blob in partial/<hex>.data, its tree in
// .obao and, after each Sync, the verified groups in .have (one byte per
// group), written atomically after the data is fsynced. The .obao is
// written plainly, not synced: on resume it counts only if it equals the
// verified tree the caller brings, so a torn one means starting over. At
// Commit it is synced (together with the data) and renamed into place as
// the blob's tree, so a fetched blob costs two files created, not four,
// and two fsyncs in a row: the two files', at once, then the directory's.
// A blob of one group has no .obao (see Disk): one file, one group, no
// progress to resume.
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
	base := filepath.Join(d.dir, "partial", ref.Hex())
	var old []byte
	if !sizeOnly(g.size) {
		old, err = os.ReadFile(base + ".obao")
	}
	switch {
	case sizeOnly(g.size):
		// One group: nothing to resume, it is fetched whole again.
	case err == nil && bytes.Equal(old, outboard):
		if have, err := os.ReadFile(base + ".have"); err == nil && len(have) == len(g.have) {
			for i, b := range have {
				g.have[i] = b == 1
			}
		}
	case err == nil || errors.Is(err, fs.ErrNotExist):
		// New, or resumed with another tree: start over. (Only one tree
		// can match ref, so a differing old one was never verified.)
		os.Remove(base + ".have")
		if err := os.WriteFile(base+".obao", outboard, 0o600); err != nil {
			return nil, fmt.Errorf("blobstore: %w", err)
		}
	default:
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	f, err := os.OpenFile(base+".data", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	if err := f.Truncate(g.size); err != nil {
		f.Close()
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	g.recheck(f)
	return &diskPartial{groups: g, d: d, base: base, f: f}, nil
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
	return writeFileAtomic(p.base+".have", b, filepath.Join(p.d.dir, "tmp"))
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
	tree := p.base + ".obao"
	if sizeOnly(p.size) {
		tree = ""
	}
	// The tree was written unsynced when the partial began: synced with
	// the bytes before it becomes the blob's.
	if err := syncBoth(p.f, tree); err != nil {
		return Info{}, fmt.Errorf("blobstore: partial %s: %w", p.ref, err)
	}
	if err := p.f.Close(); err != nil {
		return Info{}, fmt.Errorf("blobstore: partial %s: %w", p.ref, err)
	}
	if err := p.d.finalise(p.ref, p.base+".data", tree); err != nil {
		return Info{}, err
	}
	// The data and the tree were renamed into place: only the progress
	// file, if a Sync wrote one, is left, and for a blob of one group the
	// tree an older version may have written when the fetch began.
	left := []string{".have"}
	if tree == "" {
		left = append(left, ".obao")
	}
	for _, ext := range left {
		if err := syscall.Unlink(p.base + ext); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return info, fmt.Errorf("blobstore: %w", err)
		}
	}
	return info, nil
}

func (p *diskPartial) Close() error { return p.f.Close() }

func (p *diskPartial) Abort() error {
	p.f.Close()
	return p.remove()
}

func (p *diskPartial) remove() error {
	for _, ext := range []string{".have", ".obao", ".data"} {
		if err := os.Remove(p.base + ext); err != nil && !errors.Is(err, fs.ErrNotExist) {
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
