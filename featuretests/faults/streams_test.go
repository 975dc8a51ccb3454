package faults

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/blobproto"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
)

// joinProcGroup has the in-process node n join group g of the daemon
// admin.
func joinProcGroup(t *testing.T, admin *proc, g string, n *node.Node) {
	t.Helper()
	inv, err := admin.cl.Invite(admin.ctx(), api.InviteRequest{Group: g, Peer: n.ID().String(), DevType: "normal"})
	admin.must("invite", err)
	in, err := syncgroup.UnmarshalInvitation(inv.Invitation)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.JoinGroup(t.Context(), in); err != nil {
		t.Fatal(err)
	}
}

// TestThousandConcurrentStreams has ten member devices open a hundred
// fetch streams each, at once, against one daemon process: every fetch
// must complete, verified, and the daemon's memory must stay bounded.
func TestThousandConcurrentStreams(t *testing.T) {
	t.Parallel()
	const clients, perClient = 10, 100
	size := 64 << 10
	if *long {
		size = 1 << 20
	}
	holder := newProc(t, "holder", time.Second)
	g, err := holder.cl.CreateGroup(holder.ctx(), api.CreateRequest{Name: "f", Prefixes: []string{"f/"}, Private: true, DevType: "normal"})
	holder.must("create group", err)
	refs := make([]syncnode.BlobRef, perClient)
	for i := range refs {
		ref, err := holder.putBlobRow(g.ID, fmt.Sprintf("f/%03d", i), testkit.RandomBytes(size, uint64(i)))
		if err != nil {
			t.Fatal(err)
		}
		refs[i] = ref
	}
	hid, err := peer.Decode(holder.id)
	if err != nil {
		t.Fatal(err)
	}
	st, err := holder.cl.Status(holder.ctx())
	holder.must("status", err)

	var devs []*node.Node
	for range clients {
		n := nodetest.Start(t)
		joinProcGroup(t, holder, g.ID, n)
		for _, a := range st.Addrs {
			nodetest.Host(n).Peerstore().AddAddr(hid, ma.StringCast(a), time.Hour)
		}
		devs = append(devs, n)
	}
	rssBefore, err := holder.rss()
	if err != nil {
		t.Fatal(err)
	}

	// Each device fetches every blob over its own streams (raw blob
	// clients into memory, so nothing is shared or skipped).
	var cfg blobproto.ClientConfig // the defaults
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients*perClient)
	for _, d := range devs {
		cl, err := blobproto.NewClient(nodetest.Host(d), blobstore.NewMem(), cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		for _, ref := range refs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := cl.Fetch(t.Context(), ref, []peer.ID{hid}, nil)
				switch {
				case err != nil:
					errs <- err
				case res.Size != int64(size):
					errs <- fmt.Errorf("%s: %d bytes, want %d", ref, res.Size, size)
				}
			}()
		}
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	failed := 0
	for err := range errs {
		if failed == 0 {
			t.Errorf("fetch failed: %v", err)
		}
		failed++
	}
	peak, err := holder.peakRSS()
	if err != nil {
		t.Fatal(err)
	}
	total := int64(clients*perClient) * int64(size)
	t.Logf("%d concurrent fetches of %d KiB from one daemon: %d failed, %v (%.0f MB/s); daemon RSS %d MiB before, peak %d MiB",
		clients*perClient, size>>10, failed, took.Round(time.Millisecond), float64(total)/took.Seconds()/1e6, rssBefore>>20, peak>>20)
	if failed > 0 {
		t.Fatalf("%d of %d fetches failed", failed, clients*perClient)
	}
	if limit := int64(512 << 20); peak > limit {
		t.Fatalf("daemon peak RSS %d MiB, over %d MiB", peak>>20, limit>>20)
	}
}
