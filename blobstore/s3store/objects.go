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

func (s *Store) statData(ctx context.Context, ref syncnode.BlobRef) (minio.ObjectInfo, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	info, err := s.cl.StatObject(cctx, s.cfg.Bucket, s.key("blobs", ref), minio.StatObjectOptions{})
	if err != nil {
		return info, s.fail("stat "+ref.String(), err)
	}
	return info, nil
}

func (s *Store) getAll(ctx context.Context, key string) ([]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	o, err := s.cl.GetObject(cctx, s.cfg.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.fail("get "+key, err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		return nil, s.fail("get "+key, err)
	}
	return b, nil
}

func (s *Store) put(ctx context.Context, key string, r io.Reader, size int64) error {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout+time.Duration(size>>20)*time.Second)
	defer cancel()
	_, err := s.cl.PutObject(cctx, s.cfg.Bucket, key, r, size, minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return s.fail("put "+key, err)
	}
	return nil
}

// tree fetches and checks ref's tree from the bucket.
func (s *Store) tree(ctx context.Context, ref syncnode.BlobRef) ([]byte, error) {
	ob, err := s.getAll(ctx, s.key("trees", ref))
	if errors.Is(err, syncnode.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s: the bucket has no tree for it", blobstore.ErrDamaged, ref)
	}
	if err != nil {
		return nil, err
	}
	if err := blobstore.CheckTree(ref, ob); err != nil {
		return nil, err
	}
	s.ok()
	return ob, nil
}
