// Package blobstore keeps content-addressed blobs, each with the Bao
// outboard tree that lets peers verify any range of it, and never shows a
// partial or unverified blob as a blob.
package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore/baotree"
)

// ErrIncomplete reports a partial blob committed before all its bytes arrived.
var ErrIncomplete = errors.New("blobstore: partial blob is incomplete")

// Info describes a stored blob.
type Info struct {
	Ref  syncnode.BlobRef
	Size int64
}

// Reader reads a stored blob at any offset.
type Reader interface {
	io.ReaderAt
	io.Closer
	// Size returns the blob's length in bytes.
	Size() int64
}

// Range is a span of bytes [Off, Off+Len).
type Range struct {
	Off, Len int64
}

// Store is a content-addressed blob store. Every implementation passes the
// conformance suite in package blobstore/storetest.
type Store interface {
	// Put stores the bytes of r, hashing them as they are written. If want
	// is not zero and the bytes hash to another ref, nothing is stored and
	// the error wraps syncnode.ErrHashMismatch.
	Put(ctx context.Context, r io.Reader, want syncnode.BlobRef) (Info, error)
	// Open opens a stored blob for reading. Every byte read is verified
	// against the blob's tree: a damaged copy fails with an error wrapping
	// ErrDamaged, never with other bytes.
	Open(ref syncnode.BlobRef) (Reader, error)
	// Stat describes a stored blob; a missing one gives syncnode.ErrNotFound.
	Stat(ref syncnode.BlobRef) (Info, error)
	// Outboard returns the blob's Bao outboard tree, verified against ref
	// (ErrDamaged if it does not match).
	Outboard(ref syncnode.BlobRef) ([]byte, error)
	// List calls fn for every stored blob, in no set order, until fn fails.
	List(fn func(Info) error) error
	// Delete removes a blob; a missing one gives syncnode.ErrNotFound.
	Delete(ref syncnode.BlobRef) error
	// OpenPartial starts, or resumes after a restart, the verified write of
	// the blob ref whose outboard tree is given. The tree is checked
	// against ref as bytes arrive.
	OpenPartial(ref syncnode.BlobRef, outboard []byte) (Partial, error)
}

// Adopter is a Store that can take a blob without its bytes being
// transferred, because storage it shares with others (a bucket several
// servers use) has it already, whole and matching its tree. A fetch asks
// it first.
type Adopter interface {
	// Adopt takes ref as stored if it can, failing (syncnode.ErrNotFound
	// among others) if it cannot.
	Adopt(ctx context.Context, ref syncnode.BlobRef) (Info, error)
}

// PartialDropper is a Store that keeps partial writes (for resuming a
// fetch) and can discard the one of a blob no longer wanted.
type PartialDropper interface {
	// DropPartial discards ref's partial write and its progress, if there
	// is one; none is not an error.
	DropPartial(ref syncnode.BlobRef) error
}

// Partial is a blob being written range by range, each range verified
// against the blob's tree before it is accepted. It is not visible as a blob
// until Commit.
type Partial interface {
	// Size returns the blob's full length.
	Size() int64
	// WriteAt verifies and writes p at off. off must be a multiple of
	// baotree.GroupSize and p must end on a group boundary or at the blob's
	// end. Bytes that fail verification are rejected with an error wrapping
	// syncnode.ErrHashMismatch and nothing is written.
	WriteAt(p []byte, off int64) error
	// Missing returns the ranges not yet written, in order.
	Missing() []Range
	// Sync makes the ranges written so far durable; after a crash,
	// OpenPartial resumes from the last Sync.
	Sync() error
	// Commit turns the complete partial into a stored blob.
	Commit() (Info, error)
	// Close releases the partial, keeping its progress for a later resume.
	Close() error
	// Abort discards the partial and its progress.
	Abort() error
}

// groups tracks which chunk groups of a partial blob hold verified bytes.
type groups struct {
	mu   sync.Mutex
	ref  syncnode.BlobRef
	ob   []byte
	size int64
	have []bool
}

func newGroups(ref syncnode.BlobRef, outboard []byte) (*groups, error) {
	size, err := baotree.Size(outboard)
	if err != nil {
		return nil, fmt.Errorf("blobstore: partial %s: %w", ref, err)
	}
	return &groups{ref: ref, ob: slices.Clone(outboard), size: size, have: make([]bool, baotree.Groups(size))}, nil
}

// verify checks p at off and returns the group indexes it covers.
func (g *groups) verify(p []byte, off int64) (first, last int64, err error) {
	if err := baotree.VerifyGroups(g.ref.Hash(), g.ob, off, p); err != nil {
		if errors.Is(err, baotree.ErrVerify) {
			return 0, 0, fmt.Errorf("blobstore: %s: %w: %v", g.ref, syncnode.ErrHashMismatch, err)
		}
		return 0, 0, fmt.Errorf("blobstore: %s: %w", g.ref, err)
	}
	first = off / baotree.GroupSize
	last = first + (int64(len(p))+baotree.GroupSize-1)/baotree.GroupSize
	if len(p) == 0 { // the empty blob's single group
		last = first + 1
	}
	return first, last, nil
}

func (g *groups) mark(first, last int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := first; i < last; i++ {
		g.have[i] = true
	}
}

func (g *groups) snapshot() []bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.have)
}

func (g *groups) missing() []Range {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []Range
	for i := 0; i < len(g.have); i++ {
		if g.have[i] {
			continue
		}
		j := i
		for j < len(g.have) && !g.have[j] {
			j++
		}
		off := int64(i) * baotree.GroupSize
		end := min(int64(j)*baotree.GroupSize, g.size)
		out = append(out, Range{Off: off, Len: end - off})
		i = j
	}
	return out
}

func (g *groups) complete() error {
	if m := g.missing(); len(m) > 0 {
		return fmt.Errorf("%w: %s lacks %d ranges, first at %d", ErrIncomplete, g.ref, len(m), m[0].Off)
	}
	return nil
}

// putBuffers keeps the buffers puts copy through, for the next put: a
// fresh megabyte per buffer per put cost more than hashing a small blob.
// The zero value is ready to use.
type putBuffers struct{ pool sync.Pool }

const putBufSize = 1 << 20

func (p *putBuffers) get() []byte {
	if b, ok := p.pool.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, putBufSize)
}

func (p *putBuffers) put(b []byte) {
	b = b[:cap(b)]
	p.pool.Put(&b)
}

// hashing copies r into w while hashing it, checking ctx between reads.
// Writing runs in its own goroutine, a few buffers behind the hashing, so a
// put costs about the slower of the two rather than their sum. The
// buffers come from bufs and go back to it.
func hashing(ctx context.Context, w io.Writer, r io.Reader, want syncnode.BlobRef, bufs *putBuffers) (Info, []byte, error) {
	const nbuf = 4
	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- bufs.get()
	}
	defer func() {
		for range nbuf {
			bufs.put(<-free)
		}
	}()
	work := make(chan []byte, nbuf)
	werr := make(chan error, 1)
	go func() {
		var err error
		for b := range work {
			if err == nil {
				_, err = w.Write(b)
			}
			free <- b[:cap(b)]
		}
		werr <- err
	}()
	var h baotree.Hasher
	rerr := func() error {
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			buf := <-free
			n, ended, err := fill(r, buf)
			if n > 0 {
				h.Write(buf[:n])
				work <- buf[:n]
			} else {
				free <- buf
			}
			if err != nil {
				return fmt.Errorf("blobstore: read input: %w", err)
			}
			if ended {
				return nil
			}
		}
	}()
	close(work)
	if err := <-werr; err != nil {
		return Info{}, nil, fmt.Errorf("blobstore: write: %w", err)
	}
	if rerr != nil {
		return Info{}, nil, rerr
	}
	root, ob := h.Sum()
	info := Info{Ref: syncnode.RefFromHash(root), Size: h.Size()}
	if !want.IsZero() && info.Ref != want {
		return Info{}, nil, fmt.Errorf("blobstore: %w: got %s, want %s", syncnode.ErrHashMismatch, info.Ref, want)
	}
	return info, ob, nil
}

// fill reads r into buf until buf is full or r ends, and reports whether
// it ended. Only io.EOF ends r: an io.ErrUnexpectedEOF from r itself (a
// body shorter than its Content-Length, a multipart part cut off) is an
// error, not a shorter blob, as io.ReadFull would make it.
func fill(r io.Reader, buf []byte) (n int, ended bool, err error) {
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}

// Holds reports whether s holds ref, whole and verified.
func Holds(s Store, ref syncnode.BlobRef) bool {
	_, err := s.Stat(ref)
	return err == nil
}
