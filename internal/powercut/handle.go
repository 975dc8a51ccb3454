package powercut

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

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

// Read reads the overlay merged over the backing file.
func (h *handle) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, errno := h.ov.read(buf, off)
	return fuse.ReadResultData(buf[:n]), errno
}

// Write writes into the overlay: volatile until Fsync.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	return h.ov.write(data, off)
}

// Fsync writes the inode's overlay into the backing file and fsyncs it.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	h.st.fs.syncs.Add(1)
	h.ov.mu.Lock()
	defer h.ov.mu.Unlock()
	if h.ov.dead {
		return syscall.EIO
	}
	return fs.ToErrno(h.ov.writeBack(true))
}

// Flush does nothing: close makes nothing durable.
func (h *handle) Flush(ctx context.Context) syscall.Errno { return 0 }

// Release drops the handle's reference to the overlay.
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
