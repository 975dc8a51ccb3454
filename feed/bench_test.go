package feed_test

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/syncgroup"
)

// BenchmarkRowSaveWithFeed saves rows one at a time (as a write does,
// without the sync) into a store that logs them in the feed, and into one
// that does not, and reports the ratio: what the feed costs a write.
func BenchmarkRowSaveWithFeed(b *testing.B) {
	const rows = 2000
	run := func(withFeed bool) time.Duration {
		db, err := kv.Open(b.TempDir(), slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		key, _, _ := crypto.GenerateEd25519Key(nil)
		self, _ := peer.IDFromPrivateKey(key)
		g, err := syncgroup.Create("bench", []string{"k/"}, true, key, syncnode.Normal, nil, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		store := syncgroup.NewStore(db)
		if withFeed {
			l, err := feed.Open(db, self, feed.Config{})
			if err != nil {
				b.Fatal(err)
			}
			store.SetJournal(l)
		}
		v, _ := msgpack.Marshal("a row of a photo library, about this long")
		start := time.Now()
		for i := range rows {
			row, err := g.Put(fmt.Sprintf("k/%05d", i), v, time.Now())
			if err == nil {
				err = store.Save(g, []syncgroup.Row{row}, syncnode.Priority{})
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	var without, with time.Duration
	for b.Loop() {
		without += run(false)
		with += run(true)
	}
	n := float64(b.N) * rows
	b.ReportMetric(without.Seconds()*1e6/n, "µs/save")
	b.ReportMetric(with.Seconds()*1e6/n, "µs/save-with-feed")
	b.ReportMetric(with.Seconds()/without.Seconds(), "with/without")
}
