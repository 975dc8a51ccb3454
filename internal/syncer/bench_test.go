package syncer

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

// BenchmarkRowsReachFourPeers writes 10,000 rows on one node of five real
// loopback hosts and times until all four others hold them all, reporting
// rows/s and bytes sent per row delivered.
func BenchmarkRowsReachFourPeers(b *testing.B) {
	var signedT, trustedT time.Duration
	var bytes int64
	for b.Loop() {
		trustedT += fanOut(b, true, nil)
		signedT += fanOut(b, false, &bytes)
	}
	const rows, peers = 10_000, 5
	b.ReportMetric(float64(rows*b.N)/signedT.Seconds(), "rows/s")
	b.ReportMetric(float64(rows*b.N)/trustedT.Seconds(), "unverified-rows/s")
	b.ReportMetric(trustedT.Seconds()/signedT.Seconds(), "signed/unverified")
	b.ReportMetric(float64(bytes)/float64(rows*(peers-1)*b.N), "bytes/row-delivered")
}

// fanOut writes 10,000 rows on one of five peers and returns how long they
// took to reach the other four, with signature checks skipped if trust.
func fanOut(b *testing.B, trust bool, sent *int64) time.Duration {
	const rows, peers = 10_000, 5
	var took time.Duration
	{
		hosts := make([]host.Host, peers)
		syncs := make([]*Syncer, peers)
		for i := range hosts {
			h, err := p2p.NewHost(p2p.DefaultHostConfig())
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			hosts[i] = h
			cfg := DefaultConfig()
			cfg.trustRows = trust
			syncs[i] = New(h, cfg, discard, nil)
			defer syncs[i].Close()
		}
		key := hosts[0].Peerstore().PrivKey(hosts[0].ID())
		g, err := syncgroup.Create("bench", []string{"r/"}, false, key, syncnode.Normal, nil, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		syncs[0].Add(g)
		for i := 1; i < peers; i++ {
			inv, _ := syncgroup.Invite(key, g.Spec().ID, hosts[i].ID(), syncnode.Normal, time.Now().Add(time.Hour))
			if _, err := syncs[i].Join(b.Context(), inv, hosts[0].Addrs(), nil); err != nil {
				b.Fatal(err)
			}
		}
		for i := 1; i < peers; i++ {
			hosts[0].Connect(b.Context(), peer.AddrInfo{ID: hosts[i].ID(), Addrs: hosts[i].Addrs()})
		}
		start := time.Now()
		for i := range rows {
			if _, err := syncs[0].Put(g.Spec().ID, fmt.Sprintf("r/%05d", i), val(fmt.Sprintf("value %d with some text", i))); err != nil {
				b.Fatal(err)
			}
		}
		deadline := time.Now().Add(2 * time.Minute)
		for i := 1; i < peers; i++ {
			for {
				var n int
				syncs[i].With(g.Spec().ID, func(g *syncgroup.Group) error { n = len(g.Rows().List("r/")); return nil })
				if n == rows {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("peer %d has %d of %d rows", i, n, rows)
				}
				time.Sleep(time.Millisecond)
			}
		}
		took += time.Since(start)
		if sent != nil {
			*sent += syncs[0].Stats().BytesSent
		}
	}
	return took
}
