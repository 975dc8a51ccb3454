package powercut

import (
	"errors"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

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
