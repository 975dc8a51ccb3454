package signpost

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
)

// BenchmarkMerge merges a received signpost into a full local one; the
// baseline in the same run copies the same locations into a fresh map.
func BenchmarkMerge(b *testing.B) {
	rng := rand.New(rand.NewPCG(7, 7))
	base := randSignpost(rng)
	for i := range MaxLocations {
		base.AddLocation(testPeer(100+i), Location{WhenSeen: t0.Add(time.Duration(i))})
	}
	in := randSignpost(rng)
	in.AddLocation(testPeer(200), Location{WhenSeen: t0.Add(time.Hour), IsServer: true})
	var mergeT, copyT time.Duration
	for b.Loop() {
		s := time.Now()
		for range 1000 {
			m := make(map[peer.ID]Location, len(base.Locations))
			for k, v := range base.Locations {
				m[k] = v
			}
			for k, v := range in.Locations {
				m[k] = v
			}
		}
		copyT += time.Since(s)
		s = time.Now()
		for range 1000 {
			c := Signpost{Locations: make(map[peer.ID]Location, MaxLocations+1), SgIDs: map[syncnode.GroupID]struct{}{}}
			for k, v := range base.Locations {
				c.Locations[k] = v
			}
			c.Merge(in)
		}
		mergeT += time.Since(s)
	}
	b.ReportMetric(float64(b.N*1000)/mergeT.Seconds(), "merges/s")
	b.ReportMetric(float64(b.N*1000)/copyT.Seconds(), "mapcopies/s")
	b.ReportMetric(copyT.Seconds()/mergeT.Seconds(), "merge/mapcopy")
}

// BenchmarkStore100k writes 1e5 signposts through the Store and scans them
// back, against raw badger writes and reads of the same encoded bytes.
func BenchmarkStore100k(b *testing.B) {
	const n = 100_000
	rng := rand.New(rand.NewPCG(8, 8))
	sps := make([]Signpost, 64)
	for i := range sps {
		sps[i] = randSignpost(rng)
		sps[i].AddLocation(testPeer(i), Location{WhenSeen: t0, IsServer: true, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}})
	}
	refOf := func(i int) syncnode.BlobRef {
		return syncnode.RefFromHash([32]byte{byte(i), byte(i >> 8), byte(i >> 16), 1})
	}
	var writeT, scanT, rawWT, rawST time.Duration
	for b.Loop() {
		db := openDB(b, b.TempDir())
		st := NewStore(db)
		s := time.Now()
		wb := db.NewWriteBatch()
		for i := range n {
			rec := sps[i%len(sps)].toDisk()
			v, _ := encodeDisk(rec)
			wb.Set(key(refOf(i)), v)
		}
		if err := wb.Flush(); err != nil {
			b.Fatal(err)
		}
		writeT += time.Since(s)
		s = time.Now()
		count := 0
		if err := st.Scan(func(syncnode.BlobRef, Signpost) error { count++; return nil }); err != nil || count != n {
			b.Fatalf("scan: %d, %v", count, err)
		}
		scanT += time.Since(s)
		db.Close()

		raw := openDB(b, b.TempDir())
		vals := make([][]byte, len(sps))
		for i := range sps {
			vals[i], _ = encodeDisk(sps[i].toDisk())
		}
		s = time.Now()
		wb = raw.NewWriteBatch()
		for i := range n {
			wb.Set(key(refOf(i)), vals[i%len(vals)])
		}
		if err := wb.Flush(); err != nil {
			b.Fatal(err)
		}
		rawWT += time.Since(s)
		s = time.Now()
		count = 0
		raw.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.DefaultIteratorOptions)
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				it.Item().Value(func([]byte) error { count++; return nil })
			}
			return nil
		})
		rawST += time.Since(s)
		raw.Close()
	}
	per := func(d time.Duration) float64 { return float64(n*b.N) / d.Seconds() }
	b.ReportMetric(per(writeT), "writes/s")
	b.ReportMetric(per(scanT), "scans/s")
	b.ReportMetric(writeT.Seconds()/rawWT.Seconds(), "write-time-x-raw")
	b.ReportMetric(scanT.Seconds()/rawST.Seconds(), "scan-time-x-raw")
}
