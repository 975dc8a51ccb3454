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
