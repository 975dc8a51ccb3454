package blobproto

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/storetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/p2p"
)

var discard = slog.New(slog.DiscardHandler)

func newHost(t testing.TB, identity string) host.Host {
	t.Helper()
	cfg := p2p.DefaultHostConfig()
	cfg.IdentityFile = identity
	h, err := p2p.NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// link tells a about b's addresses (no connection is made until used).
func link(a, b host.Host) {
	a.Peerstore().AddAddrs(b.ID(), b.Addrs(), peerstore.PermanentAddrTTL)
}

func diskStore(t testing.TB, dir string) *blobstore.Disk {
	t.Helper()
	d, err := blobstore.OpenDisk(dir, discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// holder is a host serving a store.
type holder struct {
	h     host.Host
	store blobstore.Store
	svc   *Service
}

func newHolder(t testing.TB, store blobstore.Store) *holder {
	h := newHost(t, "")
	return &holder{h: h, store: store, svc: mustService(t, h, store, ServiceConfig{})}
}

func put(t testing.TB, s blobstore.Store, data []byte) syncnode.BlobRef {
	t.Helper()
	info, err := s.Put(context.Background(), bytes.NewReader(data), syncnode.BlobRef{})
	if err != nil {
		t.Fatal(err)
	}
	return info.Ref
}

func content(t testing.TB, s blobstore.Store, ref syncnode.BlobRef) []byte {
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

func testClient(t testing.TB, h host.Host, store blobstore.Store) *Client {
	cfg := ClientConfig{}
	cfg.IOTimeout = 2 * time.Second
	cfg.RetryDelay = 20 * time.Millisecond
	return mustClient(t, h, store, cfg)
}

func TestFetch64MiBVerified(t *testing.T) {
	data := testkit.RandomBytes(64<<20, 1)
	a := newHolder(t, diskStore(t, t.TempDir()))
	ref := put(t, a.store, data)
	bh := newHost(t, "")
	link(bh, a.h)
	bs := diskStore(t, t.TempDir())
	var last Progress
	res, err := testClient(t, bh, bs).Fetch(t.Context(), ref, []peer.ID{a.h.ID()}, func(p Progress) { last = p })
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != int64(len(data)) || res.FromNetwork != int64(len(data)) || last.Received != last.Total {
		t.Fatalf("result %+v, last progress %+v", res, last)
	}
	if !bytes.Equal(content(t, bs, ref), data) {
		t.Fatal("fetched blob differs")
	}
	have, err := testClient(t, bh, bs).Have(t.Context(), a.h.ID(), ref)
	if err != nil || !have.Have || have.Size != int64(len(data)) {
		t.Fatalf("Have = %+v, %v", have, err)
	}
	missing := testkit.RandomBytes(10, 2)
	mref, _ := storetest.RefOf(missing)
	if _, err := testClient(t, bh, bs).Fetch(t.Context(), mref, []peer.ID{a.h.ID()}, nil); !errors.Is(err, ErrNoHolder) {
		t.Fatalf("fetch of a blob nobody has: %v", err)
	}
}

func TestFetchFromThreeHoldersInParallel(t *testing.T) {
	data := testkit.RandomBytes(48<<20, 3)
	var holders []peer.ID
	bh := newHost(t, "")
	var ref syncnode.BlobRef
	for range 3 {
		h := newHolder(t, blobstore.NewMem())
		ref = put(t, h.store, data)
		link(bh, h.h)
		holders = append(holders, h.h.ID())
	}
	bs := blobstore.NewMem()
	c := testClient(t, bh, bs)
	c.cfg.RangeSize = 2 << 20
	res, err := c.Fetch(t.Context(), ref, holders, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.BytesBy) != 3 {
		t.Fatalf("bytes by holder: %v; want all three to serve", res.BytesBy)
	}
	t.Logf("bytes by holder: %v", res.BytesBy)
	if !bytes.Equal(content(t, bs, ref), data) {
		t.Fatal("fetched blob differs")
	}
}

// liarStore serves a real blob with one byte of every MiB flipped.
type liarStore struct {
	blobstore.Store
	at int64
}

type liarReader struct {
	blobstore.Reader
	at int64
}

func (l liarStore) Open(ref syncnode.BlobRef) (blobstore.Reader, error) {
	r, err := l.Store.Open(ref)
	return liarReader{r, l.at}, err
}

func (l liarReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := l.Reader.ReadAt(p, off)
	for i := range int64(n) {
		if (off+i)%(1<<20) == l.at {
			p[i] ^= 0x80
		}
	}
	return n, err
}

// fetchPastLiar fetches data from a liar (whose byte at lieAt is wrong)
// and then an honest holder, with ranges of rangeSize, and checks that the
// liar alone is rejected and the blob arrives whole. It returns the ref,
// the client's host and the liar.
func fetchPastLiar(t *testing.T, data []byte, lieAt, rangeSize int64) (syncnode.BlobRef, host.Host, *holder) {
	t.Helper()
	honest := newHolder(t, blobstore.NewMem())
	ref := put(t, honest.store, data)
	liarMem := blobstore.NewMem()
	put(t, liarMem, data)
	liar := newHolder(t, liarStore{Store: liarMem, at: lieAt})
	bh := newHost(t, "")
	link(bh, honest.h)
	link(bh, liar.h)
	bs := blobstore.NewMem()
	c := testClient(t, bh, bs)
	c.cfg.RangeSize = rangeSize
	res, err := c.Fetch(t.Context(), ref, []peer.ID{liar.h.ID(), honest.h.ID()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rejected) != 1 || res.Rejected[0] != liar.h.ID() {
		t.Fatalf("rejected %v, want the liar", res.Rejected)
	}
	if !bytes.Equal(content(t, bs, ref), data) {
		t.Fatal("fetched blob differs")
	}
	return ref, bh, liar
}

func TestLyingHolderIsRejected(t *testing.T) {
	ref, bh, liar := fetchPastLiar(t, testkit.RandomBytes(8<<20, 4), 4099, 1<<20)
	// With only the liar, the fetch fails and nothing is stored.
	bs2 := blobstore.NewMem()
	if _, err := testClient(t, bh, bs2).Fetch(t.Context(), ref, []peer.ID{liar.h.ID()}, nil); !errors.Is(err, ErrNoHolder) {
		t.Fatalf("fetch from the liar alone: %v", err)
	}
	if _, err := bs2.Stat(ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatal("a blob from a liar became visible")
	}
}

func TestResumeAfterHolderRestart(t *testing.T) {
	data := testkit.RandomBytes(64<<20, 5)
	dir := t.TempDir()
	identity := filepath.Join(dir, "identity.key")
	store := diskStore(t, filepath.Join(dir, "blobs"))
	ref := put(t, store, data)
	ah := newHost(t, identity)
	mustService(t, ah, store, ServiceConfig{})
	aID := ah.ID()

	bh := newHost(t, "")
	link(bh, ah)
	bs := diskStore(t, t.TempDir())
	c := testClient(t, bh, bs)
	c.cfg.Retries = 0
	c.cfg.SyncEvery = 4 << 20
	// Resuming is the point here, not timeouts: on a loaded machine (the
	// whole suite under -race) the restarted holder's first answer may
	// take longer than the tests' usual 2 s.
	c.cfg.IOTimeout = 15 * time.Second
	var once sync.Once
	_, err := c.Fetch(t.Context(), ref, []peer.ID{aID}, func(p Progress) {
		if p.Received >= p.Total/3 {
			once.Do(func() { go ah.Close() })
		}
	})
	if !errors.Is(err, ErrNoHolder) {
		t.Fatalf("fetch from a holder that went away: %v", err)
	}
	// The holder comes back with the same identity (on a new port).
	ah2 := newHost(t, identity)
	if ah2.ID() != aID {
		t.Fatal("identity not kept across restart")
	}
	mustService(t, ah2, store, ServiceConfig{})
	bh.Peerstore().ClearAddrs(aID)
	link(bh, ah2)
	res, err := c.Fetch(t.Context(), ref, []peer.ID{aID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after restart: %d of %d bytes came over the network", res.FromNetwork, len(data))
	if res.FromNetwork >= int64(len(data)) || res.FromNetwork == 0 {
		t.Fatalf("resumed fetch moved %d bytes of %d: nothing was resumed", res.FromNetwork, len(data))
	}
	if !bytes.Equal(content(t, bs, ref), data) {
		t.Fatal("resumed blob differs")
	}
}

func TestStalledPeersBlockNoOne(t *testing.T) {
	// A holder that takes requests and never answers.
	stalled := newHost(t, "")
	stalled.SetStreamHandler(p2p.ProtoGetBlob, func(s network.Stream) { <-t.Context().Done(); s.Reset() })
	srv := newHolder(t, blobstore.NewMem())
	big := put(t, srv.store, testkit.RandomBytes(32<<20, 6))
	var refs []syncnode.BlobRef
	var blobs [][]byte
	for i := range 50 {
		b := testkit.RandomBytes(256<<10, uint64(100+i))
		blobs = append(blobs, b)
		refs = append(refs, put(t, srv.store, b))
	}
	// Readers that ask the server for a big blob and then never read.
	slow := newHost(t, "")
	link(slow, srv.h)
	for range 4 {
		st, err := slow.NewStream(t.Context(), srv.h.ID(), p2p.ProtoGetBlob)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Reset()
		if err := p2p.WriteMsg(st, getRequest{Ref: big.Bytes(), Len: 32 << 20}, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ch := newHost(t, "")
	link(ch, srv.h)
	link(ch, stalled)
	cs := blobstore.NewMem()
	c := testClient(t, ch, cs)
	c.cfg.IOTimeout = 2 * time.Second // the stalled holder costs each fetch one timeout; a loaded machine must not fail the good one
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(refs))
	for _, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Fetch(t.Context(), ref, []peer.ID{stalled.ID(), srv.h.ID()}, nil)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("50 fetches past a stalled holder and 4 stalled readers took %v", time.Since(start))
	for i, ref := range refs {
		if !bytes.Equal(content(t, cs, ref), blobs[i]) {
			t.Fatalf("blob %d differs", i)
		}
	}
}

// TestBusyHolderIsAskedAgain has a holder with one upload slot and no queue
// serve eight fetches at once: the ones it answers "busy" (tree requests
// included) are asked again until each is served.
func TestBusyHolderIsAskedAgain(t *testing.T) {
	store := blobstore.NewMem()
	h := newHost(t, "")
	cfg := ServiceConfig{}
	cfg.MaxUploads, cfg.MaxQueued = 1, -1
	svc := mustService(t, h, store, cfg)
	var refs []syncnode.BlobRef
	for i := range 8 {
		refs = append(refs, put(t, store, testkit.RandomBytes(4<<20, uint64(300+i))))
	}
	ch := newHost(t, "")
	link(ch, h)
	c := testClient(t, ch, blobstore.NewMem())
	c.cfg.RetryDelay = 10 * time.Millisecond
	var wg sync.WaitGroup
	errs := make(chan error, len(refs))
	for _, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Fetch(t.Context(), ref, []peer.ID{h.ID()}, nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("fetch from a busy holder: %v", err)
	}
	if st := svc.Stats(); st.BytesOut != 8*4<<20 {
		t.Fatalf("holder sent %d bytes, want %d", st.BytesOut, 8*4<<20)
	}
}

// A small blob comes whole, tree and bytes, on one GetBlob stream.
func TestSmallBlobComesWholeOnOneStream(t *testing.T) {
	data := testkit.RandomBytes(256<<10, 5)
	holder := newHolder(t, blobstore.NewMem())
	ref := put(t, holder.store, data)
	var streams atomic.Int32
	holder.h.SetStreamHandler(p2p.ProtoGetBlob, func(st network.Stream) {
		streams.Add(1)
		holder.svc.handleGet(st)
	})
	bh := newHost(t, "")
	link(bh, holder.h)
	bs := blobstore.NewMem()
	if _, err := testClient(t, bh, bs).Fetch(t.Context(), ref, []peer.ID{holder.h.ID()}, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(content(t, bs, ref), data) {
		t.Fatal("fetched blob differs")
	}
	if n := streams.Load(); n != 1 {
		t.Fatalf("%d GetBlob streams for a 256 KiB blob, want 1", n)
	}
}

// A holder that sends a small blob whole with a good tree and a bad byte
// is rejected, and the next holder serves the rest in ranges.
func TestSmallBlobLiarThenHonest(t *testing.T) {
	fetchPastLiar(t, testkit.RandomBytes(1<<20, 6), 300<<10, clientDefaults.RangeSize)
}

// mustService starts a blob service on h.
func mustService(tb testing.TB, h host.Host, store blobstore.Store, cfg ServiceConfig) *Service {
	tb.Helper()
	s, err := NewService(h, store, cfg, discard)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// mustClient returns a client on h fetching into store.
func mustClient(tb testing.TB, h host.Host, store blobstore.Store, cfg ClientConfig) *Client {
	tb.Helper()
	c, err := NewClient(h, store, cfg, discard)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// A zero config field takes its default (a zero ReadSize once looped
// forever); a negative one is refused with ErrConfig.
func TestConfigZeroIsDefaultAndNonsenseRefused(t *testing.T) {
	if got := (ClientConfig{}).withDefaults(); !reflect.DeepEqual(got, clientDefaults) {
		t.Fatalf("zero client config = %+v, want the defaults %+v", got, clientDefaults)
	}
	if got := (ServiceConfig{}).withDefaults(); got.MaxUploads != 16 || got.ChunkSize != 1<<20 || got.MaxUploadsPerPeer != 8 || got.MaxQueuedPerPeer != 128 {
		t.Fatalf("zero service config = %+v", got)
	}
	if got := (ServiceConfig{MaxQueued: -1}).withDefaults(); got.MaxQueued != 0 || got.MaxQueuedPerPeer != 0 {
		t.Fatalf("MaxQueued -1 = %+v, want none waiting", got)
	}
	for _, c := range []ClientConfig{{ReadSize: -1}, {RangeSize: -5}, {IOTimeout: -time.Second}, {Retries: -2}} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("Validate(%+v) = %v, want ErrConfig", c, err)
		}
	}
	for _, c := range []ServiceConfig{{MaxUploads: -1}, {MaxQueued: -2}, {ChunkSize: -1}, {QueueWait: -time.Second}} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("Validate(%+v) = %v, want ErrConfig", c, err)
		}
	}
	// A client with an all-zero config fetches from a service with one.
	src := blobstore.NewMem()
	data := testkit.RandomBytes(3<<20, 11)
	ref := put(t, src, data)
	ah, bh := newHost(t, ""), newHost(t, "")
	link(bh, ah)
	mustService(t, ah, src, ServiceConfig{})
	dst := blobstore.NewMem()
	if _, err := mustClient(t, bh, dst, ClientConfig{}).Fetch(t.Context(), ref, []peer.ID{ah.ID()}, nil); err != nil {
		t.Fatal(err)
	}
}
