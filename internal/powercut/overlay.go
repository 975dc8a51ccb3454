package powercut

import (
	"io"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

const pageSize = 4096

// overlay holds the unsynced state of one backing file: dirty pages over
// the backing content, the logical size, and the prefix of the backing
// file still visible (a truncate hides what lies beyond, volatile).
//
// Invariants: keep <= size; no page starts at or beyond size; the bytes of
// a page beyond size are zero.
type overlay struct {
	refs int // guarded by state.mu

	mu    sync.Mutex
	fd    int              // backing file, read-write when it could be opened so
	pages map[int64][]byte // page index → pageSize bytes
	size  int64            // logical size
	keep  int64            // backing bytes [0, keep) show through
	dirty bool             // pages, size or keep differ from the backing file
	dead  bool             // the mount ended; the fd is closed
}

func openOverlay(path string) (*overlay, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &overlay{fd: fd, pages: make(map[int64][]byte), size: st.Size, keep: st.Size}, nil
}

// close releases the descriptor. ov.mu is held.
func (ov *overlay) close() {
	if !ov.dead {
		unix.Close(ov.fd)
		ov.dead = true
		ov.pages = nil
	}
}

// readBacking fills p with the merged view's backing part at off: backing
// bytes below keep, zeros elsewhere. ov.mu is held.
func (ov *overlay) readBacking(p []byte, off int64) error {
	n := 0
	if off < ov.keep {
		want := int(min(int64(len(p)), ov.keep-off))
		for n < want {
			m, err := unix.Pread(ov.fd, p[n:want], off+int64(n))
			if err != nil {
				return err
			}
			if m == 0 {
				break
			}
			n += m
		}
	}
	clear(p[n:])
	return nil
}

// read copies the merged view at off into p and returns the count.
func (ov *overlay) read(p []byte, off int64) (int, syscall.Errno) {
	ov.mu.Lock()
	defer ov.mu.Unlock()
	if ov.dead {
		return 0, syscall.EIO
	}
	if off >= ov.size {
		return 0, 0
	}
	p = p[:min(int64(len(p)), ov.size-off)]
	if err := ov.readBacking(p, off); err != nil {
		return 0, fs.ToErrno(err)
	}
	if len(ov.pages) == 0 {
		return len(p), 0
	}
	end := off + int64(len(p))
	for i := off / pageSize; i*pageSize < end; i++ {
		pg := ov.pages[i]
		if pg == nil {
			continue
		}
		lo, hi := max(off, i*pageSize), min(end, (i+1)*pageSize)
		copy(p[lo-off:hi-off], pg[lo-i*pageSize:hi-i*pageSize])
	}
	return len(p), 0
}

// write puts data at off into the dirty pages.
func (ov *overlay) write(data []byte, off int64) (uint32, syscall.Errno) {
	ov.mu.Lock()
	defer ov.mu.Unlock()
	if ov.dead {
		return 0, syscall.EIO
	}
	end := off + int64(len(data))
	for i := off / pageSize; i*pageSize < end; i++ {
		start := i * pageSize
		lo, hi := max(off, start), min(end, start+pageSize)
		pg := ov.pages[i]
		if pg == nil {
			pg = make([]byte, pageSize)
			if lo > start || hi < start+pageSize {
				// Partly written: start from the merged view, which is the
				// backing file below keep and zeros beyond it.
				if err := ov.readBacking(pg[:min(pageSize, max(0, ov.size-start))], start); err != nil {
					return 0, fs.ToErrno(err)
				}
			}
			ov.pages[i] = pg
		}
		copy(pg[lo-start:hi-start], data[lo-off:hi-off])
	}
	ov.size = max(ov.size, end)
	ov.dirty = true
	return uint32(len(data)), 0
}

// truncate sets the logical size.
func (ov *overlay) truncate(size int64) syscall.Errno {
	return ov.resize(size, false)
}

// grow raises the logical size to at least size.
func (ov *overlay) grow(size int64) syscall.Errno {
	return ov.resize(size, true)
}

func (ov *overlay) resize(size int64, growOnly bool) syscall.Errno {
	ov.mu.Lock()
	defer ov.mu.Unlock()
	if ov.dead {
		return syscall.EIO
	}
	if growOnly && size <= ov.size {
		return 0
	}
	if size < ov.size {
		for i, pg := range ov.pages {
			switch {
			case i*pageSize >= size:
				delete(ov.pages, i)
			case (i+1)*pageSize > size:
				clear(pg[size-i*pageSize:])
			}
		}
		ov.keep = min(ov.keep, size)
	}
	ov.size = size
	ov.dirty = true
	return 0
}

// getattr fills out from the backing file with the logical size; ok is
// false if the overlay has been freed.
func (ov *overlay) getattr(out *fuse.AttrOut) (errno syscall.Errno, ok bool) {
	ov.mu.Lock()
	defer ov.mu.Unlock()
	if ov.dead {
		return 0, false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(ov.fd, &st); err != nil {
		return fs.ToErrno(err), true
	}
	st.Size = ov.size
	st.Blocks = (ov.size + 511) / 512
	out.FromStat(&st)
	return 0, true
}

// writeBack makes the backing file equal the merged view, fsyncing it if
// sync is set, and empties the overlay. ov.mu is held.
func (ov *overlay) writeBack(sync bool) error {
	if ov.dead {
		return syscall.EIO
	}
	if ov.dirty {
		var st unix.Stat_t
		if err := unix.Fstat(ov.fd, &st); err != nil {
			return err
		}
		if ov.keep < st.Size {
			if err := unix.Ftruncate(ov.fd, ov.keep); err != nil {
				return err
			}
		}
		for i, pg := range ov.pages {
			start := i * pageSize
			b := pg[:min(pageSize, ov.size-start)]
			if n, err := unix.Pwrite(ov.fd, b, start); err != nil {
				return err
			} else if n < len(b) {
				return io.ErrShortWrite
			}
		}
		if err := unix.Ftruncate(ov.fd, ov.size); err != nil {
			return err
		}
		clear(ov.pages)
		ov.keep = ov.size
		ov.dirty = false
	}
	if sync {
		return unix.Fsync(ov.fd)
	}
	return nil
}
