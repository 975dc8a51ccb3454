package blobstore

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore/baotree"
)

// ErrDamaged reports a stored copy whose bytes or tree no longer match its
// ref — bit rot, or a file changed behind the store's back. A damaged copy
// is never read as the blob.
var ErrDamaged = errors.New("blobstore: stored copy is damaged")

// windowSize is the span an unaligned read verifies and keeps, so that
// small sequential reads verify each group once.
const windowSize = 4 * baotree.GroupSize

// verifiedReader reads a stored blob, checking every byte it returns
// against the blob's tree: reads that start on a group boundary verify in
// place; others go through a small verified window. It is safe for
// parallel ReadAt calls.
type verifiedReader struct {
	raw    io.ReaderAt
	closer io.Closer
	ref    syncnode.BlobRef
	root   [32]byte
	ob     []byte
	size   int64

	mu     sync.Mutex
	win    []byte
	winOff int64
}

var _ Reader = (*verifiedReader)(nil)

// newVerifiedReader checks the tree ob against ref and the stored length
// against the tree, and returns a reader of raw that verifies every read.
func newVerifiedReader(ref syncnode.BlobRef, raw io.ReaderAt, rawSize int64, closer io.Closer, ob []byte) (*verifiedReader, error) {
	if err := checkTree(ref, ob); err != nil {
		return nil, err
	}
	size, _ := baotree.Size(ob)
	if rawSize != size {
		return nil, fmt.Errorf("%w: %s: %d bytes stored, its tree says %d", ErrDamaged, ref, rawSize, size)
	}
	return &verifiedReader{raw: raw, closer: closer, ref: ref, root: ref.Hash(), ob: ob, size: size, winOff: -1}, nil
}

// NewVerifiedReader returns a Reader of the blob ref whose raw bytes
// (rawSize of them) raw reads and whose stored outboard tree is ob: the
// tree is checked against ref and the length against the tree now, and
// every byte read later against the tree; closer, if not nil, is closed
// with the reader. Stores other than this package's use it to keep
// Store.Open's promise.
func NewVerifiedReader(ref syncnode.BlobRef, raw io.ReaderAt, rawSize int64, closer io.Closer, ob []byte) (Reader, error) {
	return newVerifiedReader(ref, raw, rawSize, closer, ob)
}

// CheckTree verifies a stored outboard tree against ref, failing with
// ErrDamaged.
func CheckTree(ref syncnode.BlobRef, ob []byte) error { return checkTree(ref, ob) }

// checkTree verifies a stored outboard tree against ref.
func checkTree(ref syncnode.BlobRef, ob []byte) error {
	if _, err := baotree.Size(ob); err != nil {
		return fmt.Errorf("%w: %s: tree: %v", ErrDamaged, ref, err)
	}
	if err := baotree.VerifyOutboard(ref.Hash(), ob); err != nil {
		return fmt.Errorf("%w: %s: tree: %v", ErrDamaged, ref, err)
	}
	return nil
}

func (v *verifiedReader) Size() int64 { return v.size }

func (v *verifiedReader) Close() error {
	if v.closer == nil {
		return nil
	}
	return v.closer.Close()
}

// ReadAt reads len(p) bytes at off, each verified, as io.ReaderAt does.
// Bytes that do not match the tree fail the read with ErrDamaged.
func (v *verifiedReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blobstore: negative offset %d", off)
	}
	if off >= v.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), v.size-off))
	done := 0
	for done < n {
		pos := off + int64(done)
		rest := n - done
		if pos%baotree.GroupSize == 0 {
			span := rest - rest%baotree.GroupSize
			if pos+int64(rest) == v.size {
				span = rest
			}
			if span > 0 {
				if err := v.readVerified(p[done:done+span], pos); err != nil {
					return done, err
				}
				done += span
				continue
			}
		}
		c, err := v.fromWindow(p[done:n], pos)
		if err != nil {
			return done, err
		}
		done += c
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readVerified fills b, which starts on a group boundary and ends on one
// or at the blob's end, from pos and verifies it.
func (v *verifiedReader) readVerified(b []byte, pos int64) error {
	if _, err := v.raw.ReadAt(b, pos); err != nil && !(err == io.EOF && pos+int64(len(b)) == v.size) {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%w: %s: shorter than its tree says", ErrDamaged, v.ref)
		}
		return fmt.Errorf("blobstore: read %s: %w", v.ref, err)
	}
	if err := baotree.VerifyGroups(v.root, v.ob, pos, b); err != nil {
		return fmt.Errorf("%w: %s: bytes %d..%d: %v", ErrDamaged, v.ref, pos, pos+int64(len(b)), err)
	}
	return nil
}

// fromWindow copies into p the verified bytes at pos, loading the window
// that holds them if needed, and returns how many it copied.
func (v *verifiedReader) fromWindow(p []byte, pos int64) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.winOff < 0 || pos < v.winOff || pos >= v.winOff+int64(len(v.win)) {
		start := pos - pos%baotree.GroupSize
		end := min(start+windowSize, v.size)
		if cap(v.win) < windowSize {
			v.win = make([]byte, windowSize)
		}
		v.win = v.win[:end-start]
		v.winOff = -1
		if err := v.readVerified(v.win, start); err != nil {
			return 0, err
		}
		v.winOff = start
	}
	return copy(p, v.win[pos-v.winOff:]), nil
}
