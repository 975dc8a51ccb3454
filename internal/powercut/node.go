package powercut

import (
	"context"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

var (
	_ fs.InodeEmbedder      = (*node)(nil)
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
)

// node is a loopback node whose file contents go through the overlays.
type node struct {
	*fs.LoopbackNode
	st *state
}

// WrapChild makes every node below the root a power-cut node.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), st: n.st}
}

func (n *node) ino() uint64 { return n.StableAttr().Ino }

func (n *node) backingPath() string {
	return filepath.Join(n.RootData.Path, n.Path(n.RootData.RootNode.EmbeddedInode()))
}

// Open opens the inode's overlay; O_TRUNC truncates it, volatile.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return n.st.open(n.ino(), n.backingPath(), flags)
}

// Create creates the file in the backing directory (durable metadata) and
// opens its overlay.
func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch, lf, _, errno := n.LoopbackNode.Create(ctx, name, flags&^syscall.O_TRUNC, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if r, ok := lf.(fs.FileReleaser); ok {
		r.Release(ctx)
	}
	// The new inode is not linked under n yet: name its path here.
	fh, fl, errno := n.st.open(ch.StableAttr().Ino, filepath.Join(n.backingPath(), name), flags)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, fh, fl, 0
}

// Lookup finds a child; its attributes carry the overlay's size. A size
// from the backing file would make the kernel shrink the file and drop
// its mapped pages.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch, errno := n.LoopbackNode.Lookup(ctx, name, out)
	if errno == 0 {
		n.st.patchSize(out)
	}
	return ch, errno
}

// Link makes a hard link; its attributes carry the overlay's size.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if t, ok := target.(*node); ok {
		target = t.LoopbackNode
	}
	ch, errno := n.LoopbackNode.Link(ctx, target, name, out)
	if errno == 0 {
		n.st.patchSize(out)
	}
	return ch, errno
}

// Getattr reports the backing file's attributes with the overlay's size.
func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ov := n.st.lookup(n.ino())
	if h, ok := f.(*handle); ok {
		ov = h.ov
	}
	if ov != nil {
		if errno, ok := ov.getattr(out); ok {
			return errno
		}
	}
	// No overlay, or one just freed because it was clean: the backing
	// file is the truth.
	return n.LoopbackNode.Getattr(ctx, nil, out)
}

const attrsButSize = fuse.FATTR_MODE | fuse.FATTR_UID | fuse.FATTR_GID |
	fuse.FATTR_ATIME | fuse.FATTR_MTIME | fuse.FATTR_ATIME_NOW | fuse.FATTR_MTIME_NOW

// Setattr passes mode, owner and times through; a size change goes to the
// overlay.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if in.Valid&attrsButSize != 0 {
		in2 := *in
		in2.Valid &^= fuse.FATTR_SIZE
		if errno := n.LoopbackNode.Setattr(ctx, nil, &in2, out); errno != 0 {
			return errno
		}
	}
	if sz, ok := in.GetSize(); ok {
		ov, errno := n.st.acquire(n.ino(), n.backingPath())
		if errno != 0 {
			return errno
		}
		defer n.st.release(n.ino())
		if errno := ov.truncate(int64(sz)); errno != 0 {
			return errno
		}
	}
	return n.Getattr(ctx, f, out)
}

// Unlink removes the name and frees the overlay of a file left nameless.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	var st syscall.Stat_t
	victim := syscall.Lstat(filepath.Join(n.backingPath(), name), &st) == nil
	errno := n.LoopbackNode.Unlink(ctx, name)
	if errno == 0 && victim {
		n.st.forget(st.Ino)
	}
	return errno
}

// Rename renames and frees the overlay of a replaced file left nameless.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	var st syscall.Stat_t
	victim := false
	if np, ok := newParent.(*node); ok {
		victim = syscall.Lstat(filepath.Join(np.backingPath(), newName), &st) == nil
		newParent = np.LoopbackNode
	}
	errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	if errno == 0 && victim {
		n.st.forget(st.Ino)
	}
	return errno
}

// CopyFileRange is refused so the kernel falls back to reads and writes
// through the overlay.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}
