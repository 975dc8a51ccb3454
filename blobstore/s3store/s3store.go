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
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
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

var (
	_ blobstore.Store          = (*Store)(nil)
	_ blobstore.Adopter        = (*Store)(nil)
	_ blobstore.PartialDropper = (*Store)(nil)
)

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
