// Package powercut is a FUSE file system for tests that simulates a power
// cut the way LazyFS does for Jepsen: what a program wrote but did not fsync
// is lost when the "power" goes.
//
// Mount serves a real backing directory at a mount point (a loopback built
// on github.com/hanwen/go-fuse/v2). The semantics are:
//
//   - File data is volatile until synced. A write, a truncate (ftruncate,
//     O_TRUNC, a size change) or a fallocate that grows the file lands in
//     an in-memory overlay kept per backing inode: dirty 4 KiB pages, the
//     pending size and how much of the backing file is still visible.
//     Reads and stat merge the overlay over the backing file, so the
//     program sees its own writes. fsync or fdatasync of any handle of the
//     file (msync(MS_SYNC) of a shared mapping arrives as one) writes that
//     inode's overlay into the backing file and fsyncs it for real.
//   - Metadata is durable at once: create, mkdir, rename, unlink, link,
//     symlink, chmod, chown and utimes pass straight to the backing
//     directory. But the content of a file is only what was synced for its
//     inode, whatever its name: "write tmp; rename tmp over final; no
//     fsync; cut" leaves final holding tmp's inode with tmp's synced
//     content, usually empty. A directory fsync is accepted and does
//     nothing more.
//   - Cut drops every overlay and the kernel's page cache: it unmounts (the
//     kernel writes back dirty pages of shared mappings first; they land in
//     the overlays and are dropped with them), discards the overlays and
//     mounts again at the same mount point. The new mount is a new FUSE
//     superblock, so nothing is read from a stale kernel cache. If the mount
//     is still busy, Cut aborts the FUSE connection (MNT_FORCE) and detaches
//     it: whoever still holds a file gets ENOTCONN, as after a real cut.
//   - Unmount is a clean shutdown: the overlays are written to the backing
//     files (not fsynced) and the mount ends.
//
// mmap works (no direct_io); the kernel keeps its page cache between opens
// (FOPEN_KEEP_CACHE) since every change goes through the mount. Do not
// touch a mapping of a file on the mount from the process that serves it:
// a page fault waiting for this server while the Go runtime stops the world
// deadlocks. Run programs that mmap (badger) in child processes, SIGKILL
// them, then Cut. If the serving process dies, the mount is left behind
// (ENOTCONN) until someone unmounts it.
package powercut

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// FS is a mounted power-cut file system. Its methods are safe for
// concurrent use.
type FS struct {
	backing, mountpoint string
	log                 *slog.Logger

	mu   sync.Mutex    // serializes mount, Cut and Unmount
	done chan struct{} // closed when the server has stopped
	st   *state        // overlays of the current mount; nil when unmounted

	syncs, cuts, forced       atomic.Int64
	droppedFiles, droppedByte atomic.Int64
}

// Stats counts what the file system saw, so tests can prove that a cut
// dropped something.
type Stats struct {
	// Syncs is the number of fsync/fdatasync requests for files, including
	// those msync(MS_SYNC) sends.
	Syncs int64
	// Cuts is the number of completed Cut calls.
	Cuts int64
	// ForcedUnmounts counts cuts and unmounts that found the mount busy and
	// aborted the FUSE connection.
	ForcedUnmounts int64
	// DroppedFiles is the number of files whose unsynced changes (data or
	// size) the last cut dropped.
	DroppedFiles int64
	// DroppedBytes is the number of bytes in unsynced dirty 4 KiB pages the
	// last cut dropped (size changes alone count no bytes).
	DroppedBytes int64
}

// Available reports why FUSE power cuts cannot run here (not root, no
// /dev/fuse, no fuse in the kernel), or nil.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("powercut: mounting FUSE without fusermount needs root")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("powercut: %w", err)
	}
	f.Close()
	return nil
}

// Mount serves backing (a real directory on one file system) at mountpoint
// (an existing empty directory). Writes reach the files but stay volatile
// until fsync or fdatasync of that file. log may be nil.
func Mount(backing, mountpoint string, log *slog.Logger) (*FS, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b, err := filepath.Abs(backing)
	if err != nil {
		return nil, fmt.Errorf("powercut: %w", err)
	}
	m, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, fmt.Errorf("powercut: %w", err)
	}
	f := &FS{backing: b, mountpoint: m, log: log.With("mount", m)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.mount(); err != nil {
		return nil, err
	}
	return f, nil
}

// Stats returns the counters.
func (f *FS) Stats() Stats {
	return Stats{
		Syncs:          f.syncs.Load(),
		Cuts:           f.cuts.Load(),
		ForcedUnmounts: f.forced.Load(),
		DroppedFiles:   f.droppedFiles.Load(),
		DroppedBytes:   f.droppedByte.Load(),
	}
}

// Cut simulates a power cut: every write not yet fsynced is dropped, as is
// the kernel page cache. Callers SIGKILL every process using the mount
// first (and wait for it to exit). Afterwards the mount is usable again at
// the same path with what was durable. An error means the drop could not be
// guaranteed; the mount may then be gone.
func (f *FS) Cut() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.st == nil {
		return errors.New("powercut: cut: not mounted")
	}
	if err := f.detach(); err != nil {
		return err
	}
	files, bytes, err := f.st.shutdown(false)
	f.st = nil
	if err != nil {
		return fmt.Errorf("powercut: cut: %w", err)
	}
	f.droppedFiles.Store(int64(files))
	f.droppedByte.Store(bytes)
	f.cuts.Add(1)
	f.log.Info("powercut: power cut", "dropped_files", files, "dropped_bytes", bytes)
	return f.mount()
}

// Unmount ends the mount like a clean shutdown: what was written stays in
// the backing files, synced or not. Calling it again does nothing.
func (f *FS) Unmount() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.st == nil {
		return nil
	}
	if err := f.detach(); err != nil {
		return err
	}
	_, _, err := f.st.shutdown(true)
	f.st = nil
	if err != nil {
		return fmt.Errorf("powercut: unmount: write back: %w", err)
	}
	return nil
}

// mount starts a server with fresh overlays. f.mu is held.
func (f *FS) mount() error {
	var st syscall.Stat_t
	if err := syscall.Stat(f.backing, &st); err != nil {
		return fmt.Errorf("powercut: backing: %w", err)
	}
	s := &state{fs: f, ovs: make(map[uint64]*overlay)}
	root := &fs.LoopbackRoot{Path: f.backing, Dev: uint64(st.Dev)}
	rn := &node{LoopbackNode: &fs.LoopbackNode{RootData: root}, st: s}
	root.RootNode = rn
	sec := time.Second
	opts := &fs.Options{
		EntryTimeout: &sec,
		AttrTimeout:  &sec,
		MountOptions: fuse.MountOptions{
			DirectMountStrict: true,
			FsName:            f.backing,
			Name:              "powercut",
			MaxWrite:          1 << 20,
			// Nobody changes the backing files behind the mount, and an
			// mtime changed by a sync must not throw away mapped pages.
			DisabledCapabilities: fuse.CAP_AUTO_INVAL_DATA,
			Logger:               slog.NewLogLogger(f.log.Handler(), slog.LevelDebug),
		},
	}
	// go-fuse v2.12.1 leaves the /dev/fuse descriptor of a direct mount
	// open across exec. A child holding it keeps the connection alive if
	// this process dies, and the child then never finishes exiting: its
	// dirty mapped pages wait for a server that is gone. Hold ForkLock so
	// no child is started before the descriptor is marked close-on-exec.
	syscall.ForkLock.Lock()
	srv, err := fuse.NewServer(fs.NewNodeFS(rn, opts), f.mountpoint, &opts.MountOptions)
	if err == nil {
		err = closeFuseOnExec()
	}
	syscall.ForkLock.Unlock()
	if err != nil {
		return fmt.Errorf("powercut: mount %s: %w", f.mountpoint, err)
	}
	done := make(chan struct{})
	go func() {
		srv.Serve()
		close(done)
	}()
	if err := srv.WaitMount(); err != nil {
		_ = unix.Unmount(f.mountpoint, unix.MNT_DETACH)
		<-done
		return fmt.Errorf("powercut: mount %s: %w", f.mountpoint, err)
	}
	f.done, f.st = done, s
	return nil
}

// closeFuseOnExec marks every /dev/fuse descriptor of this process
// close-on-exec.
func closeFuseOnExec() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == "/dev/fuse" {
			syscall.CloseOnExec(fd)
		}
	}
	return nil
}

// detach unmounts and waits until the server has stopped, so no request
// can touch the overlays any more. A busy mount is aborted and detached.
func (f *FS) detach() error {
	err := unix.Unmount(f.mountpoint, 0)
	if errors.Is(err, unix.EBUSY) {
		f.forced.Add(1)
		f.log.Warn("powercut: mount busy; aborting the FUSE connection")
		// MNT_FORCE makes FUSE abort the connection: holders get ENOTCONN
		// and their dirty pages are discarded.
		if err = unix.Unmount(f.mountpoint, unix.MNT_FORCE); err != nil {
			err = unix.Unmount(f.mountpoint, unix.MNT_DETACH)
		}
	}
	if err != nil {
		return fmt.Errorf("powercut: unmount %s: %w", f.mountpoint, err)
	}
	<-f.done
	return nil
}

// state holds the overlays of one mount, keyed by backing inode number. An
// overlay keeps a descriptor of its backing file open, so the number cannot
// be reused while the overlay exists.
type state struct {
	fs   *FS
	mu   sync.Mutex
	dead bool
	ovs  map[uint64]*overlay
}

// acquire returns the overlay of inode ino, opening it from path if needed,
// and counts a reference.
func (s *state) acquire(ino uint64, path string) (*overlay, syscall.Errno) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return nil, syscall.EIO
	}
	if ov := s.ovs[ino]; ov != nil {
		ov.refs++
		return ov, 0
	}
	ov, err := openOverlay(path)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	ov.refs = 1
	s.ovs[ino] = ov
	return ov, 0
}

// open returns a handle on the overlay of ino; O_TRUNC truncates it,
// volatile.
func (s *state) open(ino uint64, path string, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	ov, errno := s.acquire(ino, path)
	if errno != 0 {
		return nil, 0, errno
	}
	if flags&syscall.O_TRUNC != 0 {
		if errno := ov.truncate(0); errno != 0 {
			s.release(ino)
			return nil, 0, errno
		}
	}
	return &handle{st: s, ino: ino, ov: ov}, fuse.FOPEN_KEEP_CACHE, 0
}

// patchSize puts the overlay's size, if any, into an entry reply.
func (s *state) patchSize(out *fuse.EntryOut) {
	if ov := s.lookup(out.Ino); ov != nil {
		ov.mu.Lock()
		if !ov.dead {
			out.Size = uint64(ov.size)
			out.Blocks = uint64(ov.size+511) / 512
		}
		ov.mu.Unlock()
	}
}

// lookup returns the overlay of ino or nil.
func (s *state) lookup(ino uint64) *overlay {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ovs[ino]
}

// release drops a reference and frees the overlay when nobody holds it and
// it has nothing to keep: it is clean, or its file has no name left.
func (s *state) release(ino uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ov := s.ovs[ino]
	if ov == nil {
		return
	}
	ov.refs--
	s.maybeFree(ino, ov)
}

// forget frees the overlay of ino if its file just lost its last name.
func (s *state) forget(ino uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ov := s.ovs[ino]; ov != nil {
		s.maybeFree(ino, ov)
	}
}

// maybeFree frees an unreferenced overlay that is clean or unlinked. s.mu
// is held.
func (s *state) maybeFree(ino uint64, ov *overlay) {
	if ov.refs > 0 {
		return
	}
	ov.mu.Lock()
	defer ov.mu.Unlock()
	var st unix.Stat_t
	if ov.dirty && unix.Fstat(ov.fd, &st) == nil && st.Nlink > 0 {
		return
	}
	ov.close()
	delete(s.ovs, ino)
}

// shutdown ends the overlays: it writes them to the backing files if
// flush is set, and reports how many files and dirty bytes it discarded.
func (s *state) shutdown(flush bool) (files int, bytes int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead = true
	for ino, ov := range s.ovs {
		ov.mu.Lock()
		if flush {
			err = errors.Join(err, ov.writeBack(false))
		} else if ov.dirty {
			files++
			bytes += int64(len(ov.pages)) * pageSize
		}
		ov.close()
		ov.mu.Unlock()
		delete(s.ovs, ino)
	}
	return files, bytes, err
}

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

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileFsyncer   = (*handle)(nil)
	_ fs.FileFlusher   = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileAllocater = (*handle)(nil)
)

// handle is an open file: a counted reference to its inode's overlay. It
// offers no passthrough descriptor, so every read and write reaches it.
type handle struct {
	st  *state
	ino uint64
	ov  *overlay
}

func (h *handle) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, errno := h.ov.read(buf, off)
	return fuse.ReadResultData(buf[:n]), errno
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	return h.ov.write(data, off)
}

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	h.st.fs.syncs.Add(1)
	h.ov.mu.Lock()
	defer h.ov.mu.Unlock()
	if h.ov.dead {
		return syscall.EIO
	}
	return fs.ToErrno(h.ov.writeBack(true))
}

func (h *handle) Flush(ctx context.Context) syscall.Errno { return 0 }

func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.st.release(h.ino)
	return 0
}

// Allocate grows the file (volatile) for mode 0 and accepts
// FALLOC_FL_KEEP_SIZE as a no-op; other modes are not supported.
func (h *handle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	switch mode {
	case 0:
		return h.ov.grow(int64(off + size))
	case unix.FALLOC_FL_KEEP_SIZE:
		return 0
	}
	return syscall.EOPNOTSUPP
}
