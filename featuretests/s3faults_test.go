package featuretests

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/s3faults"
	"github.com/syncnode/syncnode/internal/s3test"
	"github.com/syncnode/syncnode/node"
)

// TestFlakyObjectStoreLosesNothing: a server keeps the only copy of a
// blob on an object store. A read of it is cut short by the network and
// every request after it answers 503 for a while: the read fails with an
// error to retry, and the copy is neither taken for damaged nor deleted;
// once the store answers again it serves the same bytes. It runs against
// Versity and MinIO.
func TestFlakyObjectStoreLosesNothing(t *testing.T) {
	t.Parallel()
	for _, kind := range s3test.Kinds {
		t.Run(kind, func(t *testing.T) { flakyObjectStore(t, s3test.StartKind(t, kind, bucket)) })
	}
}

func flakyObjectStore(t *testing.T, srv *s3test.Server) {
	proxy := s3faults.New(t, srv.Addr)
	phone := start(t)
	server := start(t, func(c *node.Config) {
		onBucket(srv, "flaky")(c)
		c.S3.Endpoint = proxy.Addr()
	})
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, server, g, syncnode.Server)
	data := randomBytes(2<<20, 61)
	ref := putBlobRow(t, phone, g, "photos/only", data)
	waitFor(t, 30*time.Second, "the server's copy with the shares", func() bool {
		return server.HasBlob(ref) && shares(t, server, ref, g) == 2
	})

	proxy.CutReads(1)
	r, err := server.OpenBlob(ref)
	if err == nil {
		_, err = io.Copy(io.Discard, io.NewSectionReader(r, 0, r.Size()))
		r.Close()
	}
	if proxy.Cuts() == 0 {
		t.Fatalf("no read was cut (err %v): the test shows nothing", err)
	}
	if err == nil {
		t.Fatal("a read cut short succeeded")
	}
	t.Logf("the cut read failed with: %v", err)
	time.Sleep(2 * time.Second) // the node's second look, against a store that answers 503
	proxy.SetUnavailable(false)

	if !server.HasBlob(ref) {
		t.Fatal("the server dropped its copy on a read the network cut short")
	}
	if got := server.Stats().Damaged; got != 0 {
		t.Fatalf("%d copies counted damaged", got)
	}
	has, tree, markers := objects(srv, "flaky", ref)
	if !has || !tree || len(markers) != 1 {
		t.Fatalf("bucket after the faults: bytes %v, tree %v, markers %v", has, tree, markers)
	}
	if !bytes.Equal(readAll(t, server, ref), data) {
		t.Fatal("the server's copy differs after the faults")
	}
}
