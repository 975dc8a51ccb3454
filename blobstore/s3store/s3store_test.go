package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/s3store"
	"github.com/syncnode/syncnode/blobstore/storetest"
	"github.com/syncnode/syncnode/internal/s3test"
	"github.com/syncnode/syncnode/internal/testkit"
)

const bucket = "blobs"

func open(t testing.TB, srv *s3test.Server, prefix, owner string) *s3store.Store {
	t.Helper()
	s, err := s3store.Open(context.Background(), s3store.Config{Endpoint: srv.Addr, Insecure: true, Bucket: bucket, Prefix: prefix,
		Creds: srv.Creds(), Owner: owner, Staging: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// eachServer runs test against every S3 server s3test knows.
func eachServer(t *testing.T, test func(t *testing.T, srv *s3test.Server)) {
	for _, kind := range s3test.Kinds {
		t.Run(kind, func(t *testing.T) { test(t, s3test.StartKind(t, kind, bucket)) })
	}
}

// The S3 store passes the conformance suite every store passes.
func TestConformance(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *s3test.Server) {
		n := 0
		storetest.Run(t, func(t *testing.T) blobstore.Store {
			n++
			return open(t, srv, fmt.Sprintf("conformance-%d", n), "server-a")
		})
	})
}

func put(t *testing.T, s blobstore.Store, data []byte) syncnode.BlobRef {
	t.Helper()
	info, err := s.Put(context.Background(), bytes.NewReader(data), syncnode.BlobRef{})
	if err != nil {
		t.Fatal(err)
	}
	return info.Ref
}

func read(t *testing.T, s blobstore.Store, ref syncnode.BlobRef) []byte {
	t.Helper()
	r, err := s.Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Two servers share a bucket: the second adopts what the first stored
// without a byte uploaded, each holds its own marker, and the objects go
// only when the last marker does.
func TestSharedBucket(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *s3test.Server) {
		a, b := open(t, srv, "shared", "server-a"), open(t, srv, "shared", "server-b")
		data := testkit.RandomBytes(3<<20, 1)
		ref := put(t, a, data)
		if _, err := b.Stat(ref); !errors.Is(err, syncnode.ErrNotFound) {
			t.Fatalf("b holds a blob it never took: %v", err)
		}
		if _, err := b.Adopt(context.Background(), ref); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(read(t, b, ref), data) {
			t.Fatal("b reads other bytes")
		}
		if got := srv.Keys(bucket, "shared/refs/"); len(got) != 2 {
			t.Fatalf("markers: %v", got)
		}
		if err := a.Delete(ref); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(read(t, b, ref), data) {
			t.Fatal("a's delete took the blob b still holds")
		}
		if err := b.Delete(ref); err != nil {
			t.Fatal(err)
		}
		if got := srv.Keys(bucket, "shared/"); len(got) != 0 {
			t.Fatalf("objects left after the last holder deleted: %v", got)
		}
	})
}

// A store reopened with its staging directory gone (the server's disk
// lost) holds again what its markers name.
func TestReopenFromBucket(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *s3test.Server) {
		a := open(t, srv, "recover", "server-a")
		data := testkit.RandomBytes(1<<20, 2)
		ref := put(t, a, data)
		a.Close()
		again := open(t, srv, "recover", "server-a")
		if info, err := again.Stat(ref); err != nil || info.Size != int64(len(data)) {
			t.Fatalf("reopened store: %v %v", info, err)
		}
		if !bytes.Equal(read(t, again, ref), data) {
			t.Fatal("reopened store reads other bytes")
		}
	})
}

// With the S3 server down a put fails with ErrUnavailable, keeps the
// verified bytes staged, and completes on the next try once the server is
// back; no object is left half written.
func TestServerDownThenBack(t *testing.T) {
	srv := s3test.Start(t, bucket)
	s := open(t, srv, "down", "server-a")
	data := testkit.RandomBytes(2<<20, 3)
	ref, ob := storetest.RefOf(data)
	srv.Stop()
	p, err := s.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(); !errors.Is(err, s3store.ErrUnavailable) {
		t.Fatalf("commit with the server down: %v", err)
	}
	if url, last := s.Describe(); last == nil || !strings.Contains(last.Error(), "unavailable") {
		t.Fatalf("%s reports no failure: %v", url, last)
	}
	srv.Restart()
	if got := srv.Keys(bucket, "down/blobs/"); len(got) != 0 {
		t.Fatalf("objects written by the failed upload: %v", got)
	}
	p, err = s.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Missing()) != 0 {
		t.Fatal("the retry asks for bytes staged already")
	}
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(t, s, ref), data) {
		t.Fatal("uploaded blob differs")
	}
	if _, last := s.Describe(); last != nil {
		t.Fatalf("failure still reported after success: %v", last)
	}
}

// A server deletes the last marked copy of a blob while another adopts
// it, or puts the same bytes, between the deleter's listing of the markers
// and its deletion of the objects. Whichever way it goes, no marker names
// objects that are gone: the adopter either fails (and leaves no marker)
// or reads the blob, and the putter ends holding it.
func TestDeleteRacingAdopt(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *s3test.Server) {
		for _, how := range []string{"adopt", "put"} {
			t.Run(how, func(t *testing.T) {
				prefix := "race-" + how
				a, b := open(t, srv, prefix, "server-a"), open(t, srv, prefix, "server-b")
				data := testkit.RandomBytes(1<<20, 9)
				ref := put(t, a, data)
				listed, release := make(chan struct{}), make(chan struct{})
				s3store.SetBeforeObjectDelete(a, func() { close(listed); <-release })
				deleted := make(chan error, 1)
				go func() { deleted <- a.Delete(ref) }()
				<-listed // a saw no other marker and is about to delete the objects
				took := make(chan error, 1)
				go func() {
					var err error
					if how == "adopt" {
						_, err = b.Adopt(context.Background(), ref)
					} else {
						_, err = b.Put(context.Background(), bytes.NewReader(data), ref)
					}
					took <- err
				}()
				testkit.WaitFor(t, 10*time.Second, "b's marker", func() bool { return len(srv.Keys(bucket, prefix+"/refs/")) == 1 })
				close(release)
				if err := <-deleted; err != nil {
					t.Fatal(err)
				}
				err := <-took
				switch {
				case how == "put" && err != nil:
					t.Fatalf("the put racing a delete: %v", err)
				case err == nil:
					if !bytes.Equal(read(t, b, ref), data) {
						t.Fatalf("b's %s succeeded and its copy is gone or differs", how)
					}
				default:
					if keys := srv.Keys(bucket, prefix+"/refs/"); len(keys) != 0 {
						t.Fatalf("the failed adopt left markers %v naming deleted objects", keys)
					}
				}
			})
		}
	})
}
