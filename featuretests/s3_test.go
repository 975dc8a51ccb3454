package featuretests

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore/s3store"
	"github.com/syncnode/syncnode/internal/s3test"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
)

const bucket = "syncnode"

// onBucket keeps a node's blobs in srv's bucket under prefix.
func onBucket(srv *s3test.Server, prefix string) func(*node.Config) {
	return func(c *node.Config) {
		c.S3 = &s3store.Config{Endpoint: srv.Addr, Insecure: true, Bucket: bucket, Prefix: prefix, Creds: srv.Creds(),
			Timeout: 5 * time.Second}
	}
}

// objects returns the keys in the bucket for ref: its bytes, its tree and
// the markers.
func objects(srv *s3test.Server, prefix string, ref syncnode.BlobRef) (data, tree bool, markers []string) {
	for _, k := range srv.Keys(bucket, prefix+"/") {
		switch {
		case k == prefix+"/blobs/"+ref.Hex():
			data = true
		case k == prefix+"/trees/"+ref.Hex():
			tree = true
		case strings.HasPrefix(k, prefix+"/refs/"+ref.Hex()+"/"):
			markers = append(markers, strings.TrimPrefix(k, prefix+"/refs/"+ref.Hex()+"/"))
		}
	}
	return data, tree, markers
}

// The demo's three nodes with the server on an object store: the server's
// copy lands in the bucket with its tree and marker, the phone evicts
// after it, and the laptop gets the blob from the server, read from the
// bucket with Range GETs.
func TestServerOnObjectStore(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t, bucket)
	phone := start(t, func(c *node.Config) { c.BlobBudget = 1 << 20 })
	laptop := start(t)
	serverCfg := config(t, t.TempDir())
	onBucket(srv, "site")(&serverCfg)
	server := open(t, serverCfg)
	t.Cleanup(func() { server.Close() })
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, laptop, g, syncnode.Normal)
	join(t, phone, server, g, syncnode.Server)
	if store, err := server.StoreInfo(); err != nil || !strings.HasPrefix(store, "s3://syncnode/site") {
		t.Fatalf("server's store: %q %v", store, err)
	}

	data := randomBytes(3<<20, 21)
	ref := putBlobRow(t, phone, g, "photos/beach", data)
	waitFor(t, 20*time.Second, "the server's copy in the bucket, with its shares", func() bool {
		return server.HasBlob(ref) && shares(t, server, ref, g) > 0
	})
	has, tree, markers := objects(srv, "site", ref)
	if !has || !tree || !slices.Equal(markers, []string{server.ID().String()}) {
		t.Fatalf("bucket: bytes %v, tree %v, markers %v", has, tree, markers)
	}
	var staged []string
	filepath.WalkDir(filepath.Join(serverCfg.DataDir, "blobs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(p) != "LOCK" {
			staged = append(staged, p)
		}
		return nil
	})
	if len(staged) != 0 {
		t.Fatalf("the server keeps staged files after the upload: %v", staged)
	}
	waitFor(t, 20*time.Second, "the phone's eviction after the server copy", func() bool {
		phone.Evict()
		return !phone.HasBlob(ref)
	})
	if _, err := laptop.FetchBlob(t.Context(), ref, node.FetchOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, laptop, ref), data) {
		t.Fatal("the laptop's copy differs")
	}
}

// A second server on the same bucket takes the blob and its shares with
// no second transfer of the bytes: it adopts the object the first put.
func TestTwoServersShareABucket(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t, bucket)
	phone := start(t)
	first := start(t, onBucket(srv, "shared"))
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, first, g, syncnode.Server)
	data := randomBytes(3<<20, 22)
	ref := putBlobRow(t, phone, g, "photos/beach", data)
	waitFor(t, 20*time.Second, "the first server's copy", func() bool { return first.HasBlob(ref) })

	second := start(t, onBucket(srv, "shared"))
	join(t, phone, second, g, syncnode.Server)
	waitFor(t, 20*time.Second, "the second server holding the blob", func() bool { return second.HasBlob(ref) })
	if got := second.Stats().BytesIn; got != 0 {
		t.Fatalf("the second server received %d blob bytes; the bucket had them", got)
	}
	_, _, markers := objects(srv, "shared", ref)
	slices.Sort(markers)
	want := []string{first.ID().String(), second.ID().String()}
	slices.Sort(want)
	if !slices.Equal(markers, want) {
		t.Fatalf("markers %v, want one per server %v", markers, want)
	}
	nodes := []*node.Node{phone, first, second}
	waitFor(t, 20*time.Second, "shares conserved, all with the servers", func() bool {
		return totalShares(t, nodes, ref, g) == 2 && shares(t, phone, ref, g) == 0
	})
	// The first server's removal leaves the second's copy whole.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, second, ref), data) {
		t.Fatal("the second server reads other bytes")
	}
}

// A server whose database and local disk are lost rebuilds what it holds
// from the bucket: reopened with its identity key and config, it holds its
// blobs at once, takes up its group from its record there with no new
// invitation, gets its rows back from the members, and serves its blobs
// without fetching any again, though the phone that wrote them still has
// them to offer.
func TestServerRecoversFromBucket(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t, bucket)
	phone := start(t)
	laptop := start(t)
	serverCfg := config(t, t.TempDir())
	onBucket(srv, "recover")(&serverCfg)
	server := open(t, serverCfg)
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, laptop, g, syncnode.Normal)
	join(t, phone, server, g, syncnode.Server)
	// The group changes: the record keeps the spec as created, and the
	// chain brings the change back.
	if _, err := phone.ChangeGroup(g, syncgroup.Change{Op: syncgroup.AddPrefix, Prefix: "docs/"}); err != nil {
		t.Fatal(err)
	}
	var refs []syncnode.BlobRef
	var datas [][]byte
	for i := range 3 {
		d := randomBytes(1<<20, uint64(30+i))
		refs = append(refs, putBlobRow(t, phone, g, "photos/"+string(rune('a'+i)), d))
		datas = append(datas, d)
	}
	waitFor(t, 20*time.Second, "the server's copies", func() bool {
		return server.HasBlob(refs[0]) && server.HasBlob(refs[1]) && server.HasBlob(refs[2])
	})
	// A restart writes the record again, after the change.
	server.Close()
	server = open(t, serverCfg)
	server.Close()
	// The disk is lost; the identity key is kept (with the config).
	for _, sub := range []string{"db", "blobs"} {
		if err := os.RemoveAll(filepath.Join(serverCfg.DataDir, sub)); err != nil {
			t.Fatal(err)
		}
	}

	server = open(t, serverCfg)
	defer server.Close()
	for _, ref := range refs {
		if !server.HasBlob(ref) {
			t.Fatalf("after recovery the server does not hold %s", ref)
		}
	}
	// No invitation: it takes its group up from its record in the bucket
	// and the members send its rows back.
	waitFor(t, 20*time.Second, "the rows back on the server", func() bool {
		_, ok, _ := server.GetRow(g, "photos/c")
		return ok
	})
	if dev, ok := server.DevType(g); !ok || dev != syncnode.Server {
		t.Fatalf("the recovered server's membership: %v %v", dev, ok)
	}
	// A change made after the recovery applies there too.
	if _, err := phone.ChangeGroup(g, syncgroup.Change{Op: syncgroup.RemovePrefix, Prefix: "photos/"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the recovered server to follow the group's changes", func() bool {
		spec, err := server.GroupSpec(g)
		return err == nil && slices.Equal(spec.Prefixes, []string{"docs/"})
	})
	for i, ref := range refs {
		if _, err := laptop.FetchBlob(t.Context(), ref, node.FetchOptions{}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, laptop, ref), datas[i]) {
			t.Fatal("the laptop's copy from the recovered server differs")
		}
	}
	if got := server.Stats().BytesIn; got != 0 {
		t.Fatalf("the recovered server fetched %d bytes again", got)
	}
}

// With the object store down the server's fetch fails with a clear
// journal entry and is retried with backoff; it completes once the store
// is back, and no partial object is left in the bucket.
func TestObjectStoreDownIsRetried(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t, bucket)
	phone := start(t)
	server := start(t, onBucket(srv, "down"))
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, server, g, syncnode.Server)
	srv.Stop()
	data := randomBytes(2<<20, 23)
	ref := putBlobRow(t, phone, g, "photos/beach", data)
	waitFor(t, 30*time.Second, "a failed attempt in the server's journal", func() bool {
		w, err := server.Why(ref)
		return err == nil && w.Attempts >= 1 && strings.Contains(w.LastErr, "object store unavailable")
	})
	if _, serr := server.StoreInfo(); serr == nil {
		t.Fatal("the store reports no failure while it is down")
	}
	w, _ := server.Why(ref)
	t.Logf("journal while the store is down: attempts %d, last error %q", w.Attempts, w.LastErr)
	srv.Restart()
	waitFor(t, 30*time.Second, "the server's copy once the store is back", func() bool { return server.HasBlob(ref) })
	if _, serr := server.StoreInfo(); serr != nil {
		t.Fatalf("the store still reports a failure: %v", serr)
	}
	has, tree, markers := objects(srv, "down", ref)
	if !has || !tree || len(markers) != 1 {
		t.Fatalf("bucket: bytes %v, tree %v, markers %v", has, tree, markers)
	}
	var blobKeys []string
	for _, k := range srv.Keys(bucket, "down/") {
		if !strings.HasPrefix(k, "down/nodes/") { // the server's group record
			blobKeys = append(blobKeys, k)
		}
	}
	if len(blobKeys) != 3 {
		t.Fatalf("objects other than the blob's three: %v", blobKeys)
	}
	if !bytes.Equal(readAll(t, server, ref), data) {
		t.Fatal("the server's copy differs")
	}
}

// A group record in the bucket under a server's name but not signed by it
// (another tenant of the bucket copied its own there) is refused: the
// server takes up no group it never recorded.
func TestForgedGroupRecordRefused(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t, bucket)
	other := start(t, onBucket(srv, "tenant"))
	createGroup(t, other, "theirs", syncnode.Server)
	victimCfg := config(t, t.TempDir())
	onBucket(srv, "tenant")(&victimCfg)
	victim := open(t, victimCfg)
	victimID := victim.ID()
	victim.Close()

	cl := srv.Client()
	keys := srv.Keys(bucket, "tenant/nodes/"+other.ID().String()+"/groups/")
	if len(keys) != 1 {
		t.Fatalf("the other server's group records: %v", keys)
	}
	obj, err := cl.GetObject(t.Context(), bucket, keys[0], minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(obj)
	obj.Close()
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(keys[0], other.ID().String(), victimID.String(), 1)
	if _, err := cl.PutObject(t.Context(), bucket, forged, bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	victim = open(t, victimCfg)
	defer victim.Close()
	if gs := victim.Groups(); len(gs) != 0 {
		t.Fatalf("the server took up groups from a record it did not sign: %v", gs)
	}
}

// TestLeftServerForgetsItsRecord: a server that leaves its group removes
// the group's record from its bucket, so that a server rebuilt from the
// bucket after its disk is lost does not take up a group it left.
func TestLeftServerForgetsItsRecord(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t, bucket)
	phone := start(t)
	serverCfg := config(t, t.TempDir())
	onBucket(srv, "left")(&serverCfg)
	server := open(t, serverCfg)
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, server, g, syncnode.Server)
	if err := server.LeaveGroup(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	server.Close()
	for _, sub := range []string{"db", "blobs"} {
		if err := os.RemoveAll(filepath.Join(serverCfg.DataDir, sub)); err != nil {
			t.Fatal(err)
		}
	}
	server = open(t, serverCfg)
	defer server.Close()
	if gs := server.Groups(); len(gs) != 0 {
		t.Fatalf("the rebuilt server took up %d groups it had left", len(gs))
	}
}
