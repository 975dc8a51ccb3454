package featuretests

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/s3test"
	"github.com/syncnode/syncnode/node"
)

// faultyS3 is a reverse proxy in front of an S3 server that cuts range
// reads short and answers 503, as a flaky network or an overloaded
// store does.
type faultyS3 struct {
	srv *httptest.Server
	// cut makes the next ranged GETs end halfway, then fail503 holds.
	cut atomic.Int32
	// unavailable makes every request answer 503 while set.
	unavailable atomic.Bool
	cuts        atomic.Int32
}

func newFaultyS3(t *testing.T, s3 *s3test.Server) *faultyS3 {
	t.Helper()
	target, err := url.Parse("http://" + s3.Addr)
	if err != nil {
		t.Fatal(err)
	}
	f := &faultyS3{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && resp.Request.Header.Get("Range") != "" && resp.ContentLength > 1 && f.cut.Load() > 0 {
			f.cut.Add(-1)
			f.cuts.Add(1)
			// After this cut the store is down for a while: a second
			// look at the copy fails too.
			f.unavailable.Store(true)
			resp.Body = &cutBody{r: resp.Body, left: resp.ContentLength / 2}
		}
		return nil
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.unavailable.Load() {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *faultyS3) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

// cutBody passes left bytes, then fails as a dropped connection does.
type cutBody struct {
	r    io.ReadCloser
	left int64
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errors.New("connection reset by the network")
	}
	n, err := c.r.Read(p[:min(int64(len(p)), c.left)])
	c.left -= int64(n)
	return n, err
}

func (c *cutBody) Close() error { return c.r.Close() }

// TestFlakyObjectStoreLosesNothing: a server keeps the only copy of a
// blob on an object store. A read of it is cut short by the network and
// every request after it answers 503 for a while: the read fails with an
// error to retry, and the copy is neither taken for damaged nor deleted;
// once the store answers again it serves the same bytes. It runs against
// Versity and MinIO.
func TestFlakyObjectStoreLosesNothing(t *testing.T) {
	for _, kind := range s3test.Kinds {
		t.Run(kind, func(t *testing.T) { flakyObjectStore(t, s3test.StartKind(t, kind, bucket)) })
	}
}

func flakyObjectStore(t *testing.T, srv *s3test.Server) {
	proxy := newFaultyS3(t, srv)
	phone := start(t)
	server := start(t, func(c *node.Config) {
		onBucket(srv, "flaky")(c)
		c.S3.Endpoint = proxy.addr()
	})
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, server, g, syncnode.Server)
	data := randomBytes(2<<20, 61)
	ref := putBlobRow(t, phone, g, "photos/only", data)
	waitFor(t, 30*time.Second, "the server's copy with the shares", func() bool {
		return server.HasBlob(ref) && shares(t, server, ref, g) == 2
	})

	proxy.cut.Store(1)
	r, err := server.OpenBlob(ref)
	if err == nil {
		_, err = io.Copy(io.Discard, io.NewSectionReader(r, 0, r.Size()))
		r.Close()
	}
	if proxy.cuts.Load() == 0 {
		t.Fatalf("no read was cut (err %v): the test shows nothing", err)
	}
	if err == nil {
		t.Fatal("a read cut short succeeded")
	}
	t.Logf("the cut read failed with: %v", err)
	time.Sleep(2 * time.Second) // the node's second look, against a store that answers 503
	proxy.unavailable.Store(false)

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
