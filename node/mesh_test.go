package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/ports"
	"github.com/syncnode/syncnode/internal/testkit"
)

// testConfig is a node config with the periods shortened for tests.
func testConfig(dir string) Config {
	fc := fetcher.Config{}
	fc.BaseDelay, fc.Jitter = 50*time.Millisecond, 50*time.Millisecond
	fc.FirstScan, fc.ScanInterval = 200*time.Millisecond, time.Second
	return Config{DataDir: dir, SyncInterval: 300 * time.Millisecond, IOTimeout: 5 * time.Second, Fetcher: &fc, NoLAN: true}
}

func openNode(t testing.TB, dir string) *Node {
	t.Helper()
	n, err := Open(testConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// mesh opens one node per device type; node 0 creates a group and the
// others join it.
func mesh(t *testing.T, private bool, devs ...syncnode.DevType) ([]*Node, syncnode.GroupID) {
	t.Helper()
	return meshWith(t, private, func(*Config) {}, devs...)
}

// meshWith is mesh with every node's config modified by mod.
func meshWith(t *testing.T, private bool, mod func(*Config), devs ...syncnode.DevType) ([]*Node, syncnode.GroupID) {
	t.Helper()
	var nodes []*Node
	for range devs {
		cfg := testConfig(t.TempDir())
		mod(&cfg)
		n, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	spec, err := nodes[0].CreateGroup("photos", []string{"photos/"}, private, devs[0])
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes[1:] {
		join(t, nodes[0], n, spec.ID, devs[i+1])
	}
	// Everyone knows everyone.
	testkit.WaitFor(t, 10*time.Second, "membership everywhere", func() bool {
		for _, n := range nodes {
			if len(n.Members(spec.ID)) != len(nodes) {
				return false
			}
		}
		return true
	})
	return nodes, spec.ID
}

func join(t *testing.T, admin, n *Node, g syncnode.GroupID, dev syncnode.DevType) {
	t.Helper()
	inv, err := admin.Invite(g, n.ID(), dev, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.JoinGroup(t.Context(), inv); err != nil {
		t.Fatal(err)
	}
}

// putBlobRow stores random bytes as a blob on n and writes a row naming it.
func putBlobRow(t *testing.T, n *Node, g syncnode.GroupID, key string, size int, seed uint64) syncnode.BlobRef {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	info, err := n.PutBlob(t.Context(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	v, err := msgpack.Marshal(map[string]any{"name": key, "blob": info.Ref})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.PutRow(g, key, v); err != nil {
		t.Fatal(err)
	}
	return info.Ref
}

func sharesIn(t *testing.T, n *Node, ref syncnode.BlobRef, g syncnode.GroupID) int {
	t.Helper()
	sh, err := n.BlobShares(ref)
	if err != nil {
		t.Fatal(err)
	}
	return sh[g]
}

func totalShares(t *testing.T, nodes []*Node, ref syncnode.BlobRef, g syncnode.GroupID) int {
	total := 0
	for _, n := range nodes {
		total += sharesIn(t, n, ref, g)
	}
	return total
}

func TestSignpostsReachEveryMemberAndServerTakesShares(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal, syncnode.Server)
	phone, laptop, server := nodes[0], nodes[1], nodes[2]
	ref := putBlobRow(t, phone, g, "photos/cat.jpg", 300<<10, 1)
	if got := sharesIn(t, phone, ref, g); got != 2 {
		t.Fatalf("creator holds %d shares, want 2", got)
	}
	for _, n := range nodes[1:] {
		testkit.WaitFor(t, 10*time.Second, "signpost on "+n.ID().String(), func() bool {
			sp, err := n.Signpost(ref)
			if err != nil {
				return false
			}
			_, inGroup := sp.SgIDs[g]
			_, atPhone := sp.Locations[phone.ID()]
			return inGroup && atPhone
		})
	}
	// The server pulls the blob and takes both of the phone's shares; the
	// phone may then evict its copy.
	testkit.WaitFor(t, 15*time.Second, "server holds the blob and its shares", func() bool {
		return server.HasBlob(ref) && sharesIn(t, server, ref, g) == 2
	})
	if got := totalShares(t, nodes, ref, g); got != 2 {
		t.Fatalf("share total %d, want 2", got)
	}
	// The phone's escrow settles once the server's acceptance reaches it.
	testkit.WaitFor(t, 10*time.Second, "the phone's transfer settled", func() bool {
		ok, _ := phone.ledger.MayEvict(ref)
		return ok
	})
	if err := phone.RemoveBlob(ref); err != nil {
		t.Fatalf("phone may not evict after the server took the shares: %v", err)
	}
	// The laptop reads it from the server.
	info, err := laptop.FetchBlob(t.Context(), ref, FetchOptions{})
	if err != nil || info.Size != 300<<10 {
		t.Fatalf("laptop fetch: %v %v", info, err)
	}
	if got := totalShares(t, nodes, ref, g); got != 2 {
		t.Fatalf("share total %d after the laptop's fetch, want 2", got)
	}
}

func TestRowsSurviveRestartAndKeepSyncing(t *testing.T) {
	nodes, g := mesh(t, false, syncnode.Normal, syncnode.Normal)
	a := nodes[0]
	bdir := t.TempDir()
	b := openNode(t, bdir)
	join(t, a, b, g, syncnode.Normal)
	if _, err := b.PutRow(g, "photos/1", []byte{0x01}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "row at a", func() bool { _, ok, _ := a.GetRow(g, "photos/1"); return ok })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutRow(g, "photos/2", []byte{0x02}); err != nil {
		t.Fatal(err)
	}
	b = openNode(t, bdir)
	defer b.Close()
	if rows, _ := b.ListRows(g, "photos/"); len(rows) != 1 {
		t.Fatalf("after restart b has %d rows, want 1", len(rows))
	}
	// b's next write continues its sequence: a accepts it.
	if _, err := b.PutRow(g, "photos/3", []byte{0x03}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "convergence after restart", func() bool {
		ra, _ := a.ListRows(g, "photos/")
		rb, _ := b.ListRows(g, "photos/")
		return len(ra) == 3 && len(rb) == 3
	})
}

func TestLeafHandsOff(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Leaf)
	laptop, leaf := nodes[0], nodes[1]
	ref := putBlobRow(t, leaf, g, "photos/leaf.jpg", 100<<10, 2)
	testkit.WaitFor(t, 15*time.Second, "laptop holds the leaf's blob with a share", func() bool {
		return laptop.HasBlob(ref) && sharesIn(t, laptop, ref, g) >= 1
	})
	// The leaf keeps handing a share per round until it has none.
	testkit.WaitFor(t, 15*time.Second, "leaf free to evict", func() bool {
		ok, _ := leaf.ledger.MayEvict(ref)
		return ok
	})
	if got := totalShares(t, nodes, ref, g); got != 2 {
		t.Fatalf("share total %d, want 2", got)
	}
}

func TestNonMemberAndEjectedMemberGetNothing(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal, syncnode.Normal)
	admin, ejected, witness := nodes[0], nodes[1], nodes[2]
	stranger := openNode(t, t.TempDir())
	defer stranger.Close()
	ref := putBlobRow(t, admin, g, "photos/secret.jpg", 50<<10, 3)
	if err := stranger.Connect(t.Context(), admin.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := fetchFrom(ctx, stranger, ref, admin.ID())
	// Refused like a blob the admin never heard of: no holder, no word of
	// access or groups.
	if !errors.Is(err, ErrNoHolder) || strings.Contains(err.Error(), "access") || strings.Contains(err.Error(), "syncgroup") {
		t.Fatalf("stranger's fetch: %v, want no holder and nothing more", err)
	}
	if stranger.HasBlob(ref) {
		t.Fatal("stranger got the blob")
	}
	if _, err := stranger.Signpost(ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("stranger learned a signpost: %v", err)
	}

	if err := admin.EjectMember(g, ejected.ID()); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "ejection known to the witness", func() bool {
		for _, m := range witness.Members(g) {
			if m.Peer == ejected.ID() {
				return false
			}
		}
		return true
	})
	ref2 := putBlobRow(t, admin, g, "photos/after.jpg", 50<<10, 4)
	testkit.WaitFor(t, 10*time.Second, "new row at the witness", func() bool {
		_, ok, _ := witness.GetRow(g, "photos/after.jpg")
		return ok
	})
	// Rounds keep running; the ejected member's are refused.
	for range 3 {
		admin.sync.Push(g)
		witness.sync.Push(g)
	}
	if _, ok, _ := ejected.GetRow(g, "photos/after.jpg"); ok {
		t.Fatal("ejected member received a row written after its ejection")
	}
	if _, err := fetchFrom(ctx, ejected, ref2, admin.ID(), witness.ID()); !errors.Is(err, ErrNoHolder) {
		t.Fatalf("ejected member's fetch: %v", err)
	}
}

// freeAddr returns a loopback TCP listen address whose port is free now,
// for a node that must be found at the same address after a restart.
func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p)
}

func TestShareTotalsSurviveCrashMidTransfer(t *testing.T) {
	phoneDir, serverDir := t.TempDir(), t.TempDir()
	phoneCfg, serverCfg := testConfig(phoneDir), testConfig(serverDir)
	phoneCfg.ListenAddrs, serverCfg.ListenAddrs = []string{freeAddr(t)}, []string{freeAddr(t)}
	open := func(cfg Config) *Node {
		n, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	phone, server := open(phoneCfg), open(serverCfg)
	spec, err := phone.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		t.Fatal(err)
	}
	g := spec.ID
	join(t, phone, server, g, syncnode.Server)
	const blobs = 12
	var refs []syncnode.BlobRef
	for i := range blobs {
		refs = append(refs, putBlobRow(t, phone, g, fmt.Sprintf("photos/%02d", i), 256<<10, uint64(10+i)))
	}
	// Stop both while the server is part-way through taking the shares.
	testkit.WaitFor(t, 20*time.Second, "first shares at the server", func() bool {
		for _, ref := range refs {
			if sharesIn(t, server, ref, g) > 0 {
				return true
			}
		}
		return false
	})
	server.Close()
	escrowed, _ := phone.ledger.AllPending()
	phone.Close()
	taken := 0
	phone, server = open(phoneCfg), open(serverCfg)
	defer phone.Close()
	defer server.Close()
	for _, ref := range refs {
		if sharesIn(t, server, ref, g) > 0 {
			taken++
		}
	}
	t.Logf("%d of %d blobs' shares had moved at the stop, %d transfers were in escrow", taken, blobs, len(escrowed))
	defer func() {
		if !t.Failed() {
			return
		}
		for _, ref := range refs {
			w, _ := server.Why(ref)
			pw, _ := phone.Why(ref)
			t.Logf("%s: server %+v\n   phone shares %v", ref, w, pw.Shares)
		}
	}()
	testkit.WaitFor(t, 30*time.Second, "every blob at the server with its shares, nothing in escrow", func() bool {
		for _, ref := range refs {
			if !server.HasBlob(ref) || sharesIn(t, server, ref, g) != 2 {
				return false
			}
		}
		p, err := phone.ledger.AllPending()
		return err == nil && len(p) == 0
	})
	for _, ref := range refs {
		if got := totalShares(t, []*Node{phone, server}, ref, g); got != 2 {
			t.Errorf("%s: share total %d, want 2", ref, got)
		}
	}
}

// putBlobOnly stores random bytes as a blob that no row references.
func putBlobOnly(t *testing.T, n *Node, size int) syncnode.BlobRef {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(size), 5))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	info, err := n.PutBlob(t.Context(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return info.Ref
}
