package blobstore_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/testkit"
)

// BenchmarkPutVsFileWrite times a durable Put (hash, Bao tree, fsync,
// rename) against writing the same bytes to a plain os.File in 1 MiB writes
// with one fsync, in the same run, and reports the ratio. A put starts
// writeback as it writes (package writeback), which the plain write does
// not: it can beat it.
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

// BenchmarkSmallPutsVsFileWrites times 4 KiB Puts by 8 concurrent callers
// against the floor of a durable small file in the same run: 8 callers
// each creating a file, writing the bytes, fsyncing it, renaming it into a
// directory and fsyncing that. It reports the time per put and the ratio,
// for a store with packs as a node opens it and for one without.
func BenchmarkSmallPutsVsFileWrites(b *testing.B) {
	const callers, size = 8, 4096
	dir := b.TempDir()
	d, err := blobstore.OpenDisk(filepath.Join(dir, "store"), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	raw := filepath.Join(dir, "raw")
	if err := os.Mkdir(raw, 0o700); err != nil {
		b.Fatal(err)
	}
	packed := openPacked(b, filepath.Join(dir, "packed"))
	var rawT, putT, packT time.Duration
	var n int
	run := func(each func(c, i int) error) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for c := range callers {
			wg.Go(func() {
				for i := range 64 {
					if err := each(c, i); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	for b.Loop() {
		n++
		rawT += run(func(c, i int) error {
			name := filepath.Join(raw, fmt.Sprintf("%d-%d-%d", n, c, i))
			f, err := os.Create(name + ".tmp")
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := f.Write(testkit.RandomBytes(size, uint64(n<<20|c<<10|i))); err != nil {
				return err
			}
			if err := f.Sync(); err != nil {
				return err
			}
			if err := os.Rename(name+".tmp", name); err != nil {
				return err
			}
			dirf, err := os.Open(raw)
			if err != nil {
				return err
			}
			defer dirf.Close()
			return dirf.Sync()
		})
		putT += run(func(c, i int) error {
			data := testkit.RandomBytes(size, uint64(1<<40|n<<20|c<<10|i))
			_, err := d.Put(context.Background(), bytes.NewReader(data), syncnode.BlobRef{})
			return err
		})
		packT += run(func(c, i int) error {
			data := testkit.RandomBytes(size, uint64(2<<40|n<<20|c<<10|i))
			_, err := packed.Put(context.Background(), bytes.NewReader(data), syncnode.BlobRef{})
			return err
		})
	}
	per := func(t time.Duration) float64 { return float64(t.Microseconds()) / float64(n*callers*64) }
	b.ReportMetric(per(rawT), "raw-µs/file")
	b.ReportMetric(per(putT), "put-µs/blob")
	b.ReportMetric(per(packT), "packed-µs/blob")
	b.ReportMetric(rawT.Seconds()/putT.Seconds(), "put/raw")
	b.ReportMetric(rawT.Seconds()/packT.Seconds(), "packed/raw")
}
