package p2p

import (
	"context"
	"slices"
	"testing"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode/blobstore/storetest"
	"github.com/syncnode/syncnode/internal/testkit"
)

// mesh starts n hosts with DHTs, the last in client mode if clientLast,
// each connected to the first, and waits until every routing table has a
// peer.
func mesh(t testing.TB, n int, clientLast bool) ([]host.Host, []*DHT) {
	t.Helper()
	hs := make([]host.Host, n)
	ds := make([]*DHT, n)
	for i := range n {
		hs[i] = newHost(t, "")
		var opts []dht.Option
		if clientLast && i == n-1 {
			opts = append(opts, dht.Mode(dht.ModeClient))
		}
		d, err := NewDHT(hs[i], discard, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		ds[i] = d
	}
	for i := 1; i < n; i++ {
		if err := hs[i].Connect(context.Background(), peer.AddrInfo{ID: hs[0].ID(), Addrs: hs[0].Addrs()}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "the condition", func() bool {
		for _, d := range ds {
			if d.RoutingTableSize() == 0 {
				return false
			}
		}
		return true
	})
	return hs, ds
}

func TestDHTProvideOnAFindOnE(t *testing.T) {
	hs, ds := mesh(t, 5, false)
	ref, _ := storetest.RefOf([]byte("provided by A"))
	testkit.WaitFor(t, 10*time.Second, "the condition", func() bool { return ds[0].Provide(t.Context(), ref) == nil })
	var found []peer.AddrInfo
	testkit.WaitFor(t, 10*time.Second, "the condition", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		found, _ = ds[4].FindProviders(ctx, ref, 5)
		return slices.ContainsFunc(found, func(ai peer.AddrInfo) bool { return ai.ID == hs[0].ID() })
	})
	for _, ai := range found {
		if ai.ID == hs[0].ID() && len(ai.Addrs) == 0 {
			t.Fatal("provider record carried no address")
		}
	}
}

// BenchmarkDHTFindProviders measures lookups from a client-mode node in a
// 5-node private mesh (one record provided by node 0), reporting the median
// of the lookups in ms.
func BenchmarkDHTFindProviders(b *testing.B) {
	hs, ds := mesh(b, 6, true)
	ref, _ := storetest.RefOf([]byte("bench"))
	testkit.WaitFor(b, 10*time.Second, "the provide", func() bool { return ds[0].Provide(b.Context(), ref) == nil })
	client := ds[5]
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		ps, err := client.FindProviders(b.Context(), ref, 1)
		if err != nil || len(ps) == 0 || ps[0].ID != hs[0].ID() {
			b.Fatalf("lookup: %v %v", ps, err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "median-ms")
}
