package s3store

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/minio/minio-go/v7"
)

// recordKey is where record name of this server is kept.
func (s *Store) recordKey(name string) string {
	return s.cfg.Prefix + "nodes/" + s.cfg.Owner + "/" + name
}

// PutRecord keeps a small record of this server's in the bucket, beside
// its blobs, under name (a few path segments): what it needs to take up
// its work again after losing its local disk.
func (s *Store) PutRecord(name string, b []byte) error {
	return s.put(context.Background(), s.recordKey(name), bytes.NewReader(b), int64(len(b)))
}

// DeleteRecord removes a record; a missing one is no error.
func (s *Store) DeleteRecord(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	if err := s.cl.RemoveObject(ctx, s.cfg.Bucket, s.recordKey(name), minio.RemoveObjectOptions{}); err != nil {
		return s.fail("delete record", err)
	}
	return nil
}

// maxRecord bounds a record read back.
const maxRecord = 1 << 20

// Records returns this server's records by name.
func (s *Store) Records() (map[string][]byte, error) {
	ctx := context.Background()
	base := s.recordKey("")
	out := map[string][]byte{}
	for o := range s.cl.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: base, Recursive: true}) {
		if o.Err != nil {
			return nil, s.fail("list records", o.Err)
		}
		if o.Size > maxRecord {
			return nil, fmt.Errorf("s3store: record %s is %d bytes, over %d", o.Key, o.Size, maxRecord)
		}
		b, err := s.getAll(ctx, o.Key)
		if err != nil {
			return nil, err
		}
		out[strings.TrimPrefix(o.Key, base)] = b
	}
	return out, nil
}
