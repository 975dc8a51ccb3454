// Package s3store keeps a server's blobs in an S3-compatible bucket (AWS
// S3, MinIO, Ceph RGW, Garage, Versity), shared by any number of servers.
//
// Under the configured prefix the bucket holds
//
//	blobs/<64 hex>          a blob's bytes
//	trees/<64 hex>          its Bao outboard tree
//	refs/<64 hex>/<owner>   an empty marker: server <owner> holds the blob
//	dels/<64 hex>/<owner>   an empty intent: server <owner> is deleting it
//
// A blob's tree is written before its bytes and a marker after both, and a
// single PUT is atomic, so a blob is never visible without its tree and a
// marker never names a blob that was not whole. Bytes arrive through a
// local staging directory (a blobstore.Disk): a put or a fetch is
// verified and made durable there first, then uploaded, then removed
// from staging; a crash between the two is finished at the next open.
//
// Servers sharing a bucket each hold their own markers. A server that
// needs a blob already in the bucket adopts it (Adopt: the tree is
// checked against the ref and the length against the tree, and its
// marker written) with no transfer. Delete removes the server's own
// marker and deletes the objects only when no other server's marker
// remains. Reads are S3 Range GETs, every byte verified against the tree.
//
// Deleting the objects of a blob while another server adopts it is made
// safe without conditional requests (S3 has If-None-Match on PUT in
// places, but no server this package meets offers a conditional delete).
// Two flags, each written before the other is read:
//
//   - the deleter writes its intent, then lists the markers; it deletes
//     the objects only if none is left, and removes its intent after;
//   - an adopter (or an uploader) writes its marker, then lists the
//     intents; while one is there it waits, then checks that the objects
//     are still there, and if not it removes its marker and fails (an
//     upload puts them again).
//
// S3 lists what was written before the list (AWS since 2020, MinIO,
// Versity and Ceph RGW: strong read-after-write and list consistency), so
// at least one of the two sees the other: no marker ever names objects
// that a delete removed after it was written. A deleter that crashed
// leaves its intent behind; an intent is honoured for IntentTTL (ten
// request timeouts), and a delete that could not remove the objects within
// half of it gives up, leaving them for any server to adopt. Objects a
// server uploaded but never marked (it crashed and never came back) stay
// in the bucket until removed by hand; any server adopts them.
package s3store

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/baotree"
)

// ErrUnavailable reports an object store that could not be reached or
// refused the request (wrong credentials, missing bucket, a server down).
var ErrUnavailable = errors.New("s3store: object store unavailable")

// Config says where the bucket is and who this server is.
type Config struct {
	// Endpoint is the S3 server's host:port ("s3.amazonaws.com").
	Endpoint string
	// Insecure speaks plain HTTP instead of HTTPS.
	Insecure bool
	// Region is the bucket's region (empty: the server's default).
	Region string
	// Bucket and Prefix locate the store; Prefix may be empty.
	Bucket, Prefix string
	// Creds are the credentials; nil takes them from the environment
	// (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or MINIO_ROOT_USER and
	// MINIO_ROOT_PASSWORD) or the standard AWS credentials file.
	Creds *credentials.Credentials
	// Owner names this server in the reference markers (its peer ID).
	Owner string
	// Staging is the local directory puts and fetches are verified and
	// made durable in before they are uploaded.
	Staging string
	// Timeout bounds each request (default 30 s).
	Timeout time.Duration
}

// URL is the store as a user names it: s3://bucket/prefix at endpoint.
func (c Config) URL() string {
	return fmt.Sprintf("s3://%s/%s (%s)", c.Bucket, strings.Trim(c.Prefix, "/"), c.Endpoint)
}

// ParseURL splits s3://bucket/prefix into bucket and prefix.
func ParseURL(u string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(u, "s3://")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("s3store: %q is not s3://bucket/prefix", u)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("s3store: %q names no bucket", u)
	}
	return bucket, strings.Trim(prefix, "/"), nil
}

// Store is a blobstore.Store in an S3 bucket.
type Store struct {
	cfg   Config
	cl    *minio.Client
	stage *blobstore.Disk
	log   *slog.Logger

	// beforeObjectDelete, if set (by tests), runs in Delete after the
	// markers were listed and before the objects go.
	beforeObjectDelete func()

	mu   sync.Mutex
	held map[syncnode.BlobRef]heldBlob // what this server's markers name
	last error                         // the last request's failure, nil after a success
}

type heldBlob struct {
	size int64
	at   time.Time
}

var (
	_ blobstore.Store   = (*Store)(nil)
	_ blobstore.Adopter = (*Store)(nil)
)

// Open connects to the bucket (which must exist), opens the staging
// directory, reads which blobs this server's markers name, and uploads
// what a crash left staged.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	if cfg.Owner == "" || strings.Contains(cfg.Owner, "/") {
		return nil, fmt.Errorf("s3store: owner %q: want a name without slashes", cfg.Owner)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Prefix = strings.Trim(cfg.Prefix, "/"); cfg.Prefix != "" {
		cfg.Prefix += "/"
	}
	creds := cfg.Creds
	if creds == nil {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{}, &credentials.EnvMinio{}, &credentials.FileAWSCredentials{}})
	}
	// Few retries inside one request: a fetch that fails is retried by
	// the node with backoff, and its error should come while it matters.
	cl, err := minio.New(cfg.Endpoint, &minio.Options{Creds: creds, Secure: !cfg.Insecure, Region: cfg.Region, MaxRetries: 2})
	if err != nil {
		return nil, fmt.Errorf("s3store: %s: %w", cfg.URL(), err)
	}
	s := &Store{cfg: cfg, cl: cl, log: log, held: map[syncnode.BlobRef]heldBlob{}}
	cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	ok, err := cl.BucketExists(cctx, cfg.Bucket)
	cancel()
	if err != nil {
		return nil, s.fail("open", err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s: no such bucket", ErrUnavailable, cfg.URL())
	}
	if err := s.loadMarkers(ctx); err != nil {
		return nil, err
	}
	if s.stage, err = blobstore.OpenDisk(cfg.Staging, log); err != nil {
		return nil, err
	}
	s.dropIncomplete(ctx)
	err = s.stage.List(func(i blobstore.Info) error {
		if err := s.upload(ctx, i.Ref); err != nil {
			log.Warn("staged blob not uploaded at open; kept for the next try", "blob", i.Ref, "err", err)
		}
		return nil
	})
	if err != nil {
		s.stage.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the staging directory.
func (s *Store) Close() error { return s.stage.Close() }

// Describe names the store and its last failure (nil after a success).
func (s *Store) Describe() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.URL(), s.last
}

func (s *Store) key(kind string, ref syncnode.BlobRef) string {
	return s.cfg.Prefix + kind + "/" + ref.Hex()
}

func (s *Store) marker(ref syncnode.BlobRef) string {
	return s.key("refs", ref) + "/" + s.cfg.Owner
}

// fail records a request's failure and returns it wrapped: unreachable
// servers, refused credentials and missing buckets as ErrUnavailable.
func (s *Store) fail(op string, err error) error {
	var wrapped error
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchKey":
		return fmt.Errorf("s3store: %s: %w", op, syncnode.ErrNotFound)
	case resp.Code != "" && resp.StatusCode != http.StatusServiceUnavailable:
		wrapped = fmt.Errorf("%w: %s: %s: %s (%s)", ErrUnavailable, s.cfg.URL(), op, resp.Code, resp.Message)
	default:
		wrapped = fmt.Errorf("%w: %s: %s: %v", ErrUnavailable, s.cfg.URL(), op, err)
	}
	s.mu.Lock()
	s.last = wrapped
	s.mu.Unlock()
	return wrapped
}

func (s *Store) ok() {
	s.mu.Lock()
	s.last = nil
	s.mu.Unlock()
}

// loadMarkers reads which blobs this server's markers name.
func (s *Store) loadMarkers(ctx context.Context) error {
	suffix := "/" + s.cfg.Owner
	for o := range s.cl.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.cfg.Prefix + "refs/", Recursive: true}) {
		if o.Err != nil {
			return s.fail("list markers", o.Err)
		}
		name, ok := strings.CutSuffix(strings.TrimPrefix(o.Key, s.cfg.Prefix+"refs/"), suffix)
		if !ok {
			continue
		}
		raw, err := hex.DecodeString(name)
		if err != nil || len(raw) != syncnode.HashSize {
			continue
		}
		ref := syncnode.RefFromHash([syncnode.HashSize]byte(raw))
		info, err := s.statData(ctx, ref)
		if err != nil {
			s.log.Warn("marker names a blob the bucket lacks; dropped", "blob", ref, "err", err)
			s.cl.RemoveObject(ctx, s.cfg.Bucket, o.Key, minio.RemoveObjectOptions{})
			continue
		}
		s.held[ref] = heldBlob{size: info.Size, at: o.LastModified}
	}
	s.ok()
	return nil
}

// dropIncomplete aborts the multipart uploads a crash left under the
// prefix: they are invisible, but stored.
func (s *Store) dropIncomplete(ctx context.Context) {
	for u := range s.cl.ListIncompleteUploads(ctx, s.cfg.Bucket, s.cfg.Prefix+"blobs/", true) {
		if u.Err != nil {
			return
		}
		if err := s.cl.RemoveIncompleteUpload(ctx, s.cfg.Bucket, u.Key); err == nil {
			s.log.Info("incomplete upload removed", "key", u.Key)
		}
	}
}

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
