package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/baotree"
)

// upload moves a blob committed in staging into the bucket: its tree, its
// bytes unless the bucket has them already, then this server's marker;
// then it leaves staging.
func (s *Store) upload(ctx context.Context, ref syncnode.BlobRef) error {
	if _, err := s.Adopt(ctx, ref); err == nil {
		return s.stage.Delete(ref)
	}
	ob, err := s.stage.Outboard(ref)
	if err != nil {
		return err
	}
	r, err := s.stage.Open(ref)
	if err != nil {
		return err
	}
	defer r.Close()
	for try := 0; ; try++ {
		if err := s.put(ctx, s.key("trees", ref), bytes.NewReader(ob), int64(len(ob))); err != nil {
			return err
		}
		if err := s.put(ctx, s.key("blobs", ref), io.NewSectionReader(r, 0, r.Size()), r.Size()); err != nil {
			return err
		}
		if err := s.put(ctx, s.marker(ref), bytes.NewReader(nil), 0); err != nil {
			return err
		}
		err := s.afterMarker(ctx, ref)
		if err == nil {
			break
		}
		// Another server's delete of the same blob removed what was
		// just uploaded: once more, or the blob stays staged.
		if try == 1 || !errors.Is(err, syncnode.ErrNotFound) && !errors.Is(err, blobstore.ErrDamaged) {
			s.cl.RemoveObject(context.Background(), s.cfg.Bucket, s.marker(ref), minio.RemoveObjectOptions{})
			return err
		}
	}
	s.ok()
	s.mu.Lock()
	s.held[ref] = heldBlob{size: r.Size(), at: time.Now()}
	s.mu.Unlock()
	return s.stage.Delete(ref)
}

// Adopt takes ref as held by this server if the bucket has it already: its
// tree verifies against ref and its length against the tree. Nothing is
// transferred; this server's marker is written.
func (s *Store) Adopt(ctx context.Context, ref syncnode.BlobRef) (blobstore.Info, error) {
	if info, err := s.Stat(ref); err == nil {
		return info, nil
	}
	info, err := s.statData(ctx, ref)
	if err != nil {
		return blobstore.Info{}, err
	}
	ob, err := s.tree(ctx, ref)
	if err != nil {
		return blobstore.Info{}, err
	}
	if size, _ := baotree.Size(ob); size != info.Size {
		return blobstore.Info{}, fmt.Errorf("%w: %s: %d bytes in the bucket, its tree says %d", blobstore.ErrDamaged, ref, info.Size, size)
	}
	if err := s.put(ctx, s.marker(ref), bytes.NewReader(nil), 0); err != nil {
		return blobstore.Info{}, err
	}
	if err := s.afterMarker(ctx, ref); err != nil {
		// Deleted meanwhile by the last server that held it: this
		// marker would name nothing.
		s.cl.RemoveObject(context.Background(), s.cfg.Bucket, s.marker(ref), minio.RemoveObjectOptions{})
		return blobstore.Info{}, err
	}
	s.mu.Lock()
	s.held[ref] = heldBlob{size: info.Size, at: time.Now()}
	s.mu.Unlock()
	return blobstore.Info{Ref: ref, Size: info.Size}, nil
}

// Put implements blobstore.Store: the bytes are verified and made durable
// in staging, then uploaded.
func (s *Store) Put(ctx context.Context, r io.Reader, want syncnode.BlobRef) (blobstore.Info, error) {
	info, err := s.stage.Put(ctx, r, want)
	if err != nil {
		return info, err
	}
	return info, s.upload(ctx, info.Ref)
}

// DropPartial implements blobstore.PartialDropper: the partial kept in
// staging is discarded.
func (s *Store) DropPartial(ref syncnode.BlobRef) error { return s.stage.DropPartial(ref) }

// OpenPartial implements blobstore.Store: the partial is kept and
// verified in staging and uploaded at Commit. A blob the bucket has
// already is adopted instead, and one a failed upload left staged is
// uploaded now; either way the partial returned is complete.
func (s *Store) OpenPartial(ref syncnode.BlobRef, outboard []byte) (blobstore.Partial, error) {
	ctx := context.Background()
	if info, err := s.Adopt(ctx, ref); err == nil {
		return done{info}, nil
	}
	if _, err := s.stage.Stat(ref); err == nil {
		if err := s.upload(ctx, ref); err != nil {
			return nil, err
		}
		info, err := s.Stat(ref)
		return done{info}, err
	}
	p, err := s.stage.OpenPartial(ref, outboard)
	if err != nil {
		return nil, err
	}
	return &partial{Partial: p, s: s, ref: ref}, nil
}

// partial is a staged partial blob uploaded at Commit.
type partial struct {
	blobstore.Partial
	s   *Store
	ref syncnode.BlobRef
}

// Commit commits the staged blob, then uploads it.
func (p *partial) Commit() (blobstore.Info, error) {
	info, err := p.Partial.Commit()
	if err != nil {
		return info, err
	}
	// A failed upload leaves the blob staged, whole and durable: the next
	// try uploads it without fetching it again.
	return info, p.s.upload(context.Background(), p.ref)
}

// done is a partial blob that is already stored.
type done struct{ info blobstore.Info }

func (d done) Size() int64                     { return d.info.Size }
func (d done) WriteAt([]byte, int64) error     { return nil }
func (d done) Missing() []blobstore.Range      { return nil }
func (d done) Sync() error                     { return nil }
func (d done) Commit() (blobstore.Info, error) { return d.info, nil }
func (d done) Close() error                    { return nil }
func (d done) Abort() error                    { return nil }
