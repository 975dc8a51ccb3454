package s3store_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/s3test"
	"github.com/syncnode/syncnode/internal/testkit"
)

// BenchmarkPutAndRangedGet compares, in one run, storing a 32 MiB blob
// and reading it back in 1 MiB ranges through the S3 store, through the
// local disk store, and as raw S3 PUT and Range GETs of the same bytes on
// the same server. The S3 store verifies and stages every byte before it
// uploads, and verifies every byte it reads.
func BenchmarkPutAndRangedGet(b *testing.B) {
	srv := s3test.Start(b, bucket)
	s3 := open(b, srv, "bench", "server-a")
	disk, err := blobstore.OpenDisk(b.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer disk.Close()
	cl := srv.Client()
	ctx := context.Background()
	const size, rangeSize = 32 << 20, 1 << 20
	var putS3, putDisk, putRaw, getS3, getDisk, getRaw time.Duration
	seed := uint64(0)
	for b.Loop() {
		b.StopTimer()
		seed++
		data := testkit.RandomBytes(size, seed)
		b.StartTimer()

		ref, d := timedPut(b, s3, data)
		putS3 += d
		getS3 += timedRead(b, s3, ref)
		ref, d = timedPut(b, disk, data)
		putDisk += d
		getDisk += timedRead(b, disk, ref)

		key := fmt.Sprintf("raw/%d", seed)
		start := time.Now()
		if _, err := cl.PutObject(ctx, bucket, key, bytes.NewReader(data), size, minio.PutObjectOptions{}); err != nil {
			b.Fatal(err)
		}
		putRaw += time.Since(start)
		start = time.Now()
		buf := make([]byte, rangeSize)
		for off := int64(0); off < size; off += rangeSize {
			opts := minio.GetObjectOptions{}
			opts.SetRange(off, off+rangeSize-1)
			o, err := cl.GetObject(ctx, bucket, key, opts)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(o, buf); err != nil {
				b.Fatal(err)
			}
			o.Close()
		}
		getRaw += time.Since(start)
	}
	mbps := func(d time.Duration) float64 { return float64(b.N) * size / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(putS3), "s3store-put-MB/s")
	b.ReportMetric(mbps(putRaw), "raw-s3-put-MB/s")
	b.ReportMetric(mbps(putDisk), "disk-put-MB/s")
	b.ReportMetric(putRaw.Seconds()/putS3.Seconds(), "put-vs-raw-s3")
	b.ReportMetric(mbps(getS3), "s3store-get-MB/s")
	b.ReportMetric(mbps(getRaw), "raw-s3-get-MB/s")
	b.ReportMetric(mbps(getDisk), "disk-get-MB/s")
	b.ReportMetric(getRaw.Seconds()/getS3.Seconds(), "get-vs-raw-s3")
}

func timedPut(b *testing.B, s blobstore.Store, data []byte) (syncnode.BlobRef, time.Duration) {
	start := time.Now()
	info, err := s.Put(context.Background(), bytes.NewReader(data), syncnode.BlobRef{})
	if err != nil {
		b.Fatal(err)
	}
	return info.Ref, time.Since(start)
}

// timedRead reads ref in 1 MiB ranges, as the blob service does.
func timedRead(b *testing.B, s blobstore.Store, ref syncnode.BlobRef) time.Duration {
	start := time.Now()
	r, err := s.Open(ref)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < r.Size(); off += int64(len(buf)) {
		n := min(int64(len(buf)), r.Size()-off)
		if _, err := r.ReadAt(buf[:n], off); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}
