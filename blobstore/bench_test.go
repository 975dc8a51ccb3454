package blobstore_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/testkit"
)

// BenchmarkPutVsFileWrite times a durable Put (hash, Bao tree, fsync,
// rename) against writing the same bytes to a plain os.File in 1 MiB writes
// with one fsync, in the same run, and reports the ratio.
func BenchmarkPutVsFileWrite(b *testing.B) {
	const size = 128 << 20
	data := testkit.RandomBytes(size, 3)
	dir := b.TempDir()
	d, err := blobstore.OpenDisk(filepath.Join(dir, "store"), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	var rawT, putT time.Duration
	b.SetBytes(size)
	for b.Loop() {
		start := time.Now()
		f, err := os.Create(filepath.Join(dir, "raw"))
		if err != nil {
			b.Fatal(err)
		}
		for p := data; len(p) > 0; p = p[1<<20:] {
			if _, err := f.Write(p[:1<<20]); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		rawT += time.Since(start)
		os.Remove(f.Name())

		start = time.Now()
		info, err := d.Put(context.Background(), bytes.NewReader(data), syncnode.BlobRef{})
		if err != nil {
			b.Fatal(err)
		}
		putT += time.Since(start)
		d.Delete(info.Ref)
	}
	mbps := func(t time.Duration) float64 { return float64(size) * float64(b.N) / t.Seconds() / 1e6 }
	b.ReportMetric(mbps(rawT), "raw-MB/s")
	b.ReportMetric(mbps(putT), "put-MB/s")
	b.ReportMetric(rawT.Seconds()/putT.Seconds(), "put/raw")
}
