package kv

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// rssKiB reads this process's resident set size.
func rssKiB(tb testing.TB) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status")
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var kib float64
		if n, _ := fmt.Sscanf(string(line), "VmRSS: %f kB", &kib); n == 1 {
			return kib
		}
	}
	tb.Skip("no VmRSS")
	return 0
}

// BenchmarkOpenMemory reports the heap and RSS that opening the store costs
// with Options (heap and RSS at open; heap after 1e5 writes of 200-byte records); the baseline in
// the same run is badger's default options.
func BenchmarkOpenMemory(b *testing.B) {
	measure := func(opts badger.Options) (heapOpen, heapWritten, rssOpen float64) {
		runtime.GC()
		var m0, m1, m2 runtime.MemStats
		runtime.ReadMemStats(&m0)
		rss0 := rssKiB(b)
		db, err := badger.Open(opts)
		if err != nil {
			b.Fatal(err)
		}
		runtime.ReadMemStats(&m1)
		rss := rssKiB(b) - rss0
		wb := db.NewWriteBatch()
		val := bytes.Repeat([]byte{7}, 200)
		for i := range 100_000 {
			wb.Set(fmt.Appendf(nil, "sp/%08d", i), val)
		}
		if err := wb.Flush(); err != nil {
			b.Fatal(err)
		}
		runtime.ReadMemStats(&m2)
		db.Close()
		return float64(m1.HeapAlloc-m0.HeapAlloc) / (1 << 20), float64(m2.HeapAlloc-m0.HeapAlloc) / (1 << 20), rss / 1024
	}
	for b.Loop() {
		ho, hw, rss := measure(Options(b.TempDir(), slog.New(slog.DiscardHandler)))
		dho, dhw, drss := measure(badger.DefaultOptions(b.TempDir()).WithLogger(nil))
		b.ReportMetric(ho, "open-heap-MiB")
		b.ReportMetric(hw, "written-heap-MiB")
		b.ReportMetric(rss, "open-rss-MiB")
		b.ReportMetric(dho, "default-open-heap-MiB")
		b.ReportMetric(dhw, "default-written-heap-MiB")
		b.ReportMetric(drss, "default-open-rss-MiB")
	}
}
