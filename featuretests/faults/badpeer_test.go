package faults

import (
	"bufio"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore/baotree"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/signpost"
)

// The blob protocol's messages as a hostile peer writes them: it speaks
// the wire format itself rather than through syncnode's service.
type getRequest struct {
	Ref  []byte `msgpack:"r"`
	Off  int64  `msgpack:"o"`
	Len  int64  `msgpack:"l"`
	Tree bool   `msgpack:"t,omitempty"`
}

type getResponse struct {
	Code    uint8  `msgpack:"c"`
	Msg     string `msgpack:"m,omitempty"`
	Size    int64  `msgpack:"s"`
	TreeLen int64  `msgpack:"t"`
	Len     int64  `msgpack:"l"`
}

// Ways a hostile holder misbehaves when asked for blob bytes.
const (
	wrongBytes = "wrong bytes"
	wrongTree  = "wrong tree"
	truncate   = "truncates"
	slowLoris  = "slow-loris"
	resets     = "resets"
	// drip sends just fast enough never to count as stalled (the fault
	// suite's nodes want 256 KiB in each 5 s).
	drip = "drips"
)

// adversary is a real member node whose blob upload handler is replaced by
// one that misbehaves in one way; it answers "have" truthfully.
type adversary struct {
	n     *node.Node
	mode  string
	asked atomic.Int64

	mu    sync.Mutex
	blobs map[syncnode.BlobRef][]byte
}

func newAdversary(n *node.Node, mode string) *adversary {
	a := &adversary{n: n, mode: mode, blobs: map[syncnode.BlobRef][]byte{}}
	nodetest.Host(n).SetStreamHandler(p2p.ProtoGetBlob, a.serve)
	return a
}

func (a *adversary) hold(data []byte) {
	a.mu.Lock()
	a.blobs[testkit.Ref(data)] = data
	a.mu.Unlock()
}

func (a *adversary) serve(st network.Stream) {
	defer st.Close()
	a.asked.Add(1)
	var req getRequest
	if err := p2p.ReadMsg(bufio.NewReader(st), st, &req, 4<<10, 5*time.Second); err != nil {
		st.Reset()
		return
	}
	ref, err := syncnode.RefFromBytes(req.Ref)
	a.mu.Lock()
	data, ok := a.blobs[ref]
	a.mu.Unlock()
	if err != nil || !ok || req.Off < 0 || req.Len < 0 || req.Off+req.Len > int64(len(data)) {
		p2p.WriteMsg(st, getResponse{Code: 1, Msg: "blob not held"}, 5*time.Second)
		return
	}
	var tree []byte
	if req.Tree {
		var h baotree.Hasher
		h.Write(data)
		_, tree = h.Sum()
		if a.mode == wrongTree {
			tree = slices.Clone(tree)
			for i := 8; i < len(tree); i += 61 {
				tree[i] ^= 0x5a
			}
		}
	}
	if err := p2p.WriteMsg(st, getResponse{Size: int64(len(data)), TreeLen: int64(len(tree)), Len: req.Len}, 5*time.Second); err != nil {
		st.Reset()
		return
	}
	st.Write(tree)
	body := data[req.Off : req.Off+req.Len]
	switch a.mode {
	case wrongBytes:
		body = slices.Clone(body)
		for i := 0; i < len(body); i += 1000 {
			body[i] ^= 1
		}
		st.Write(body)
	case truncate:
		st.Write(body[:len(body)/2])
	case slowLoris:
		// 1 KiB every 100 ms: the stream never falls silent for long.
		for off := 0; off < len(body); off += 1 << 10 {
			if _, err := st.Write(body[off:min(off+1<<10, len(body))]); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	case resets:
		st.Write(body[:min(64<<10, len(body))])
		st.Reset()
	case drip:
		for off := 0; off < len(body); off += 4 << 10 {
			if _, err := st.Write(body[off:min(off+4<<10, len(body))]); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	default:
		st.Write(body)
	}
}

// TestHostilePeers has members that lie, send a wrong tree, truncate,
// trickle bytes (slow-loris) or reset. First each offers a blob alone: the
// fetch must fail cleanly with nothing stored, the peer must be demoted,
// and once an honest member offers the same blob it must arrive, verified.
// Then blobs offered by three hostile members and the honest one must all
// arrive without the demoted peers being asked again. Blobs beside them
// must fetch at the pace they do alone, and no share is made or lost.
// It times fetches, so it runs alone (not in parallel); under -short one
// round of mixed blobs.
func TestHostilePeers(t *testing.T) {
	rounds, size := 2, 1<<20
	switch {
	case *long:
		rounds, size = 12, 3<<20
	case testing.Short():
		rounds = 1 // each hostile peer still offers 3 of the 5 mixed blobs
	}
	const ioTimeout = 2 * time.Second
	fast := func(c *node.Config) { c.IOTimeout = ioTimeout; c.SyncInterval = 100 * time.Millisecond }
	honest := nodetest.Start(t, fast)
	fetcher := nodetest.Start(t, fast)
	g := nodetest.CreateGroup(t, honest, "f", syncnode.Normal)
	nodetest.Join(t, honest, fetcher, g, syncnode.Normal)
	nodes := []*node.Node{honest, fetcher}
	var advs []*adversary
	for _, mode := range []string{wrongBytes, wrongTree, truncate, slowLoris, resets} {
		n := nodetest.Start(t, fast)
		nodetest.Join(t, honest, n, g, syncnode.Normal)
		advs = append(advs, newAdversary(n, mode))
		nodes = append(nodes, n)
	}
	seed := uint64(0)
	blob := func() []byte { seed++; return testkit.RandomBytes(size, seed) }
	// post has each of by write a row naming data (holding it); listed
	// waits until the fetcher's signpost lists them all. A batch of blobs
	// is posted first and waited for after, so that the waits overlap.
	writers := map[syncnode.BlobRef]int{}
	post := func(data []byte, key string, by ...*node.Node) syncnode.BlobRef {
		ref := testkit.Ref(data)
		writers[ref] += len(by)
		for i, n := range by {
			for _, a := range advs {
				if a.n == n {
					a.hold(data)
				}
			}
			nodetest.PutBlobRow(t, n, g, fmt.Sprintf("%s-by-%d", key, i), data)
		}
		return ref
	}
	listed := func(ref syncnode.BlobRef, by ...*node.Node) {
		// Wait for the last writer and a full signpost (it keeps the
		// signpost.MaxLocations best locations), or every writer.
		testkit.WaitFor(t, 10*time.Second, "the holders in the signpost", func() bool {
			sp, err := fetcher.Signpost(ref)
			if err != nil {
				return false
			}
			if _, ok := sp.Locations[by[len(by)-1].ID()]; !ok {
				return false
			}
			missing := 0
			for _, n := range by {
				if _, ok := sp.Locations[n.ID()]; !ok {
					missing++
				}
			}
			return missing == 0 || len(sp.Locations) >= signpost.MaxLocations
		})
	}
	verify := func(ref syncnode.BlobRef) {
		if testkit.Ref(nodetest.ReadAll(t, fetcher, ref)) != ref {
			t.Fatalf("wrong bytes accepted for %s", ref)
		}
	}
	fetchAll := func(refs []syncnode.BlobRef) (time.Duration, error) {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, len(refs))
		for _, ref := range refs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := fetcher.FetchBlob(t.Context(), ref, node.FetchOptions{}); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		return time.Since(start), <-errs
	}
	clean := func(k int) []syncnode.BlobRef {
		var refs []syncnode.BlobRef
		for i := range k {
			refs = append(refs, post(blob(), fmt.Sprintf("f/clean-%d-%d", seed, i), honest))
		}
		for _, ref := range refs {
			listed(ref, honest)
		}
		return refs
	}
	base, err := fetchAll(clean(4))
	if err != nil {
		t.Fatal(err)
	}

	// Alone, each hostile peer's blob fails to arrive, and nothing of it
	// is visible; fetches of clean blobs run beside.
	alone := make([]syncnode.BlobRef, len(advs))
	data := make([][]byte, len(advs))
	for i, a := range advs {
		data[i] = blob()
		alone[i] = post(data[i], fmt.Sprintf("f/alone-%d", i), a.n)
	}
	for i, a := range advs {
		listed(alone[i], a.n)
	}
	besideRefs := clean(4)
	var wg sync.WaitGroup
	for i, a := range advs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := fetcher.FetchBlob(t.Context(), alone[i], node.FetchOptions{})
			if err == nil {
				t.Errorf("the blob only a peer that %s holds was fetched", a.mode)
			} else {
				t.Logf("from the peer that %s alone: %v", a.mode, err)
			}
		}()
	}
	beside, err := fetchAll(besideRefs)
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	st := fetcher.Stats()
	for i, a := range advs {
		if fetcher.HasBlob(alone[i]) {
			t.Errorf("a blob from the peer that %s is visible", a.mode)
		}
		if !slices.Contains(st.Demoted, a.n.ID()) {
			t.Errorf("the peer that %s is not demoted", a.mode)
		}
	}
	if st.VerifyFailures != 2 {
		t.Errorf("%d holders rejected for bytes that did not verify, want 2 (wrong bytes, wrong tree)", st.VerifyFailures)
	}
	t.Logf("4 clean blobs alone: %v; beside 5 hostile fetches: %v", base.Round(time.Millisecond), beside.Round(time.Millisecond))
	if beside > base+ioTimeout+time.Second {
		t.Errorf("clean fetches slowed from %v to %v by hostile peers", base, beside)
	}
	// Once the honest member offers them, they arrive.
	for i := range advs {
		post(data[i], fmt.Sprintf("f/alone-%d-honest", i), honest)
	}
	for i := range advs {
		listed(alone[i], honest)
	}
	if _, err := fetchAll(alone); err != nil {
		t.Fatal(err)
	}

	// Mixed: three hostile holders and the honest one per blob; the
	// demoted ones are not asked again.
	askedBefore := askedCounts(advs)
	var mixed []syncnode.BlobRef
	var mixedBy [][]*node.Node
	for i := range rounds * len(advs) {
		by := []*node.Node{advs[i%5].n, advs[(i+1)%5].n, advs[(i+2)%5].n, honest}
		mixed = append(mixed, post(blob(), fmt.Sprintf("f/mixed-%d", i), by...))
		mixedBy = append(mixedBy, by)
	}
	for i, ref := range mixed {
		listed(ref, mixedBy[i]...)
	}
	took, err := fetchAll(mixed)
	if err != nil {
		t.Fatal(err)
	}
	if got := askedCounts(advs); !slices.Equal(got, askedBefore) {
		t.Errorf("demoted peers asked again: %v, were %v", got, askedBefore)
	}
	all := append(append(alone, mixed...), besideRefs...)
	for _, ref := range all {
		verify(ref)
	}
	t.Logf("%d blobs of %d KiB offered by hostile peers fetched in %v: 0 wrong bytes accepted, 5 of 5 hostile peers demoted",
		len(alone)+len(mixed), size>>10, took.Round(time.Millisecond))

	// Shares moved from the holders to the fetcher; none made or lost:
	// each writer holding the blob granted itself 2.
	testkit.WaitFor(t, 20*time.Second, "share totals of 2 per writer", func() bool {
		for _, ref := range all {
			if nodetest.TotalShares(t, nodes, ref, g) != 2*writers[ref] {
				return false
			}
		}
		return true
	})
}

func askedCounts(advs []*adversary) []int64 {
	var out []int64
	for _, a := range advs {
		out = append(out, a.asked.Load())
	}
	return out
}
