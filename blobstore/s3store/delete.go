package s3store

import (
	"bytes"
	"context"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/syncnode/syncnode"
)

// Delete implements blobstore.Store: this server's marker goes, and the
// objects with it unless another server's marker remains (see the package
// comment for the race with an adopter).
func (s *Store) Delete(ref syncnode.BlobRef) error {
	if _, err := s.Stat(ref); err != nil {
		return err
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), s.intentTTL()/2)
	defer cancel()
	if err := s.cl.RemoveObject(ctx, s.cfg.Bucket, s.marker(ref), minio.RemoveObjectOptions{}); err != nil {
		return s.fail("delete marker", err)
	}
	s.mu.Lock()
	delete(s.held, ref)
	s.mu.Unlock()
	if err := s.put(ctx, s.intent(ref), bytes.NewReader(nil), 0); err != nil {
		return err
	}
	defer s.cl.RemoveObject(context.Background(), s.cfg.Bucket, s.intent(ref), minio.RemoveObjectOptions{})
	for o := range s.cl.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.key("refs", ref) + "/", Recursive: true}) {
		if o.Err != nil {
			return s.fail("list markers", o.Err)
		}
		return nil // another server still holds it
	}
	if s.beforeObjectDelete != nil {
		s.beforeObjectDelete()
	}
	if time.Since(start) > s.intentTTL()/2 {
		s.log.Warn("delete too slow to be safe; the objects stay for any server to adopt", "blob", ref)
		return nil
	}
	for _, kind := range []string{"blobs", "trees"} {
		if err := s.cl.RemoveObject(ctx, s.cfg.Bucket, s.key(kind, ref), minio.RemoveObjectOptions{}); err != nil {
			return s.fail("delete", err)
		}
	}
	s.ok()
	return nil
}

// IntentTTL is how long a delete's intent is honoured, in request
// timeouts.
const IntentTTL = 10

func (s *Store) intentTTL() time.Duration { return IntentTTL * s.cfg.Timeout }

func (s *Store) intent(ref syncnode.BlobRef) string {
	return s.key("dels", ref) + "/" + s.cfg.Owner
}

// afterMarker runs once this server's marker of ref is written: it waits
// while another server's delete of ref is under way (one that may have
// listed the markers before this one was written), then checks that the
// objects are still there.
func (s *Store) afterMarker(ctx context.Context, ref syncnode.BlobRef) error {
	var waited time.Duration
	for {
		lctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		pending := false
		for o := range s.cl.ListObjects(lctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.key("dels", ref) + "/", Recursive: true}) {
			if o.Err != nil {
				cancel()
				return s.fail("list delete intents", o.Err)
			}
			if o.Key == s.intent(ref) || time.Since(o.LastModified) > s.intentTTL() {
				continue // this server's own, or a crashed deleter's
			}
			pending = true
		}
		cancel()
		if !pending {
			break
		}
		if waited >= s.intentTTL() {
			s.log.Warn("a delete intent outlived its time; ignored", "blob", ref)
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
			waited += 100 * time.Millisecond
		}
	}
	if _, err := s.statData(ctx, ref); err != nil {
		return err
	}
	_, err := s.tree(ctx, ref)
	return err
}
