package blobproto

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/p2p"
)

// rawReads is a blob store whose reads skip verification: the baseline
// that verified serving is measured against.
type rawReads struct {
	*blobstore.Disk
	dir string
}

type rawFile struct {
	*os.File
	size int64
}

func (f rawFile) Size() int64 { return f.size }

func (r rawReads) Open(ref syncnode.BlobRef) (blobstore.Reader, error) {
	f, err := os.Open(filepath.Join(r.dir, "blobs", ref.Hex()[:2], ref.Hex()))
	if err != nil {
		return nil, err
	}
	fi, _ := f.Stat()
	return rawFile{f, fi.Size()}, nil
}

// getAll asks holder for the whole blob over the GetBlob protocol and
// discards the bytes, timing the serving alone (no client-side work).
func getAll(b *testing.B, from, holder host.Host, ref syncnode.BlobRef, size int64) time.Duration {
	start := time.Now()
	st, err := from.NewStream(context.Background(), holder.ID(), p2p.ProtoGetBlob)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := p2p.WriteMsg(st, getRequest{Ref: ref.Bytes(), Len: size}, 10*time.Second); err != nil {
		b.Fatal(err)
	}
	br := bufio.NewReaderSize(st, 1<<20)
	var resp getResponse
	if err := p2p.ReadMsg(br, st, &resp, maxRequest, 10*time.Second); err != nil || resp.Code != codeOK {
		b.Fatalf("get: %+v %v", resp, err)
	}
	n, _ := io.Copy(io.Discard, br)
	if n != size {
		b.Fatalf("served %d of %d bytes", n, size)
	}
	return time.Since(start)
}

// BenchmarkServeVerified serves one blob to a peer with every byte
// verified against its tree, and in the same run the same blob from the
// same files with unverified reads and as a bare libp2p stream; it reports
// verified ÷ unverified serving.
func BenchmarkServeVerified(b *testing.B) {
	size := min(benchSize(), 128<<20)
	src := testkit.RandomBytes(int(size), 43)
	mk := func() host.Host {
		cfg := p2p.DefaultHostConfig()
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		h, err := p2p.NewHost(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { h.Close() })
		return h
	}
	verifiedH, rawH, client := mk(), mk(), mk()
	link(client, verifiedH)
	link(client, rawH)
	dir := b.TempDir()
	disk := diskStore(b, dir)
	ref := put(b, disk, src)
	mustService(b, verifiedH, disk, ServiceConfig{})
	mustService(b, rawH, rawReads{disk, dir}, ServiceConfig{})
	var verT, rawT, bareT time.Duration
	for b.Loop() {
		rawT += getAll(b, client, rawH, ref, size)
		verT += getAll(b, client, verifiedH, ref, size)
		bareT += bare(b, verifiedH, client, src)
	}
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(verT), "verified-MB/s")
	b.ReportMetric(mbps(rawT), "unverified-MB/s")
	b.ReportMetric(mbps(bareT), "bare-stream-MB/s")
	b.ReportMetric(rawT.Seconds()/verT.Seconds(), "verified/unverified")
}

// BenchmarkReadVerified reads a stored blob in 1 MiB reads through the
// store's verified reader and, in the same run, the same file unverified
// (from the page cache: memory bandwidth against BLAKE3 speed).
func BenchmarkReadVerified(b *testing.B) {
	const size = 64 << 20
	src := testkit.RandomBytes(size, 44)
	dir := b.TempDir()
	disk := diskStore(b, dir)
	ref := put(b, disk, src)
	read := func(s blobstore.Store) time.Duration {
		start := time.Now()
		r, err := s.Open(ref)
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		for off := int64(0); off < size; off += int64(len(buf)) {
			if _, err := r.ReadAt(buf, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
		r.Close()
		return time.Since(start)
	}
	var verT, rawT time.Duration
	b.SetBytes(size)
	for b.Loop() {
		rawT += read(rawReads{disk, dir})
		verT += read(disk)
	}
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(verT), "verified-MB/s")
	b.ReportMetric(mbps(rawT), "unverified-MB/s")
	b.ReportMetric(rawT.Seconds()/verT.Seconds(), "verified/unverified")
}
