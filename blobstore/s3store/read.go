package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
)

// Stat implements blobstore.Store.
func (s *Store) Stat(ref syncnode.BlobRef) (blobstore.Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.held[ref]
	if !ok {
		return blobstore.Info{}, fmt.Errorf("s3store: %s: %w", ref, syncnode.ErrNotFound)
	}
	return blobstore.Info{Ref: ref, Size: h.size}, nil
}

// ModTime returns when this server took ref.
func (s *Store) ModTime(ref syncnode.BlobRef) (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.held[ref]
	if !ok {
		return time.Time{}, fmt.Errorf("s3store: %s: %w", ref, syncnode.ErrNotFound)
	}
	return h.at, nil
}

// Outboard implements blobstore.Store.
func (s *Store) Outboard(ref syncnode.BlobRef) ([]byte, error) {
	if _, err := s.Stat(ref); err != nil {
		return nil, err
	}
	return s.tree(context.Background(), ref)
}

// Open implements blobstore.Store: reads are Range GETs, verified.
func (s *Store) Open(ref syncnode.BlobRef) (blobstore.Reader, error) {
	info, err := s.Stat(ref)
	if err != nil {
		return nil, err
	}
	ob, err := s.tree(context.Background(), ref)
	if err != nil {
		return nil, err
	}
	return blobstore.NewVerifiedReader(ref, ranged{s, s.key("blobs", ref)}, info.Size, nil, ob)
}

// ranged reads an object with Range GETs.
type ranged struct {
	s   *Store
	key string
}

// ReadAt reads len(p) bytes at off with one Range GET.
func (r ranged) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.s.cfg.Timeout)
	defer cancel()
	opts := minio.GetObjectOptions{}
	if err := opts.SetRange(off, off+int64(len(p))-1); err != nil {
		return 0, err
	}
	o, err := r.s.cl.GetObject(ctx, r.s.cfg.Bucket, r.key, opts)
	if err != nil {
		return 0, r.fail(err)
	}
	defer o.Close()
	n, err := io.ReadFull(o, p)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return n, r.short(ctx, off+int64(n), err)
	} else if err != nil {
		err = r.fail(err)
	}
	return n, err
}

// short tells what a range read that ended at end means: the object is
// shorter (io.EOF: the copy is damaged, or the read was past its end), or
// the answer was cut short on its way (an error to retry, never damage).
// Only the object's size, asked again, decides.
func (r ranged) short(ctx context.Context, end int64, cut error) error {
	info, err := r.s.cl.StatObject(ctx, r.s.cfg.Bucket, r.key, minio.StatObjectOptions{})
	switch {
	case err != nil:
		return r.fail(err)
	case info.Size <= end:
		return io.EOF
	}
	return r.s.fail("read "+r.key, fmt.Errorf("answer cut short at byte %d of %d: %w", end, info.Size, cut))
}

// fail reports a failed read; an object gone from the bucket is a
// damaged copy, which the node restores from a peer.
func (r ranged) fail(err error) error {
	err = r.s.fail("read "+r.key, err)
	if errors.Is(err, syncnode.ErrNotFound) {
		return fmt.Errorf("%w: %s is gone from the bucket", blobstore.ErrDamaged, r.key)
	}
	return err
}

// List implements blobstore.Store: the blobs this server's markers name.
func (s *Store) List(fn func(blobstore.Info) error) error {
	s.mu.Lock()
	infos := make([]blobstore.Info, 0, len(s.held))
	for ref, h := range s.held {
		infos = append(infos, blobstore.Info{Ref: ref, Size: h.size})
	}
	s.mu.Unlock()
	for _, i := range infos {
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}
