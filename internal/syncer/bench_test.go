package syncer

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
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
			cfg := Config{}
			cfg.trustRows = trust
			syncs[i] = mustNew(b, h, cfg, discard, nil)
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
			hosts[i].Peerstore().AddAddrs(hosts[0].ID(), hosts[0].Addrs(), time.Hour)
			if _, err := syncs[i].Join(b.Context(), inv, []peer.ID{hosts[0].ID()}, nil); err != nil {
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

// volatileStore is the row store without its syncs: the baseline that
// BenchmarkDurableRowWrites compares durable rows with.
type volatileStore struct{ *syncgroup.Store }

func (volatileStore) Sync() error { return nil }

// BenchmarkDurableRowWrites writes 200 rows on a node whose store is a
// real badger database, one writer after another and then eight at once,
// with every row on stable storage before Put returns, and reports the
// time against the same writes left to badger's own pace.
func BenchmarkDurableRowWrites(b *testing.B) {
	const rows = 200
	run := func(durable bool, writers int) time.Duration {
		h, err := p2p.NewHost(p2p.DefaultHostConfig())
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		db, err := kv.Open(b.TempDir(), discard)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		cfg := Config{}
		var store Store = syncgroup.NewStore(db)
		if !durable {
			store = volatileStore{syncgroup.NewStore(db)}
		}
		cfg.Store = store
		s := mustNew(b, h, cfg, discard, nil)
		defer s.Close()
		key := h.Peerstore().PrivKey(h.ID())
		g, err := syncgroup.Create("bench", []string{"r/"}, false, key, syncnode.Normal, nil, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Add(g); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := w; i < rows; i += writers {
					if _, err := s.Put(g.Spec().ID, fmt.Sprintf("r/%05d", i), val(fmt.Sprintf("value %d", i))); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	var base, one, eight time.Duration
	for b.Loop() {
		base += run(false, 1)
		one += run(true, 1)
		eight += run(true, 8)
	}
	n := float64(b.N)
	b.ReportMetric(base.Seconds()/n, "s/200-volatile")
	b.ReportMetric(one.Seconds()/n, "s/200-durable")
	b.ReportMetric(eight.Seconds()/n, "s/200-durable-8-writers")
	b.ReportMetric(one.Seconds()/base.Seconds(), "durable/volatile")
}
