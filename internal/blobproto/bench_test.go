package blobproto

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"lukechampine.com/blake3"

	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/p2p"
)

const protoBare = "/syncnode-bench/bare/1.0.0"

// benchSize is the blob size of BenchmarkFetch (SYNCNODE_BENCH_MIB, default 256).
func benchSize() int64 {
	if v, err := strconv.Atoi(os.Getenv("SYNCNODE_BENCH_KIB")); err == nil && v > 0 {
		return int64(v) << 10
	}
	if v, err := strconv.Atoi(os.Getenv("SYNCNODE_BENCH_MIB")); err == nil && v > 0 {
		return int64(v) << 20
	}
	return 256 << 20
}

// rawTCP copies n bytes over a loopback net.Conn and returns the time.
func rawTCP(b *testing.B, src []byte) time.Duration {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write(src)
		c.Close()
	}()
	start := time.Now()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, c)
	c.Close()
	if n != int64(len(src)) {
		b.Fatalf("raw copy moved %d bytes", n)
	}
	return time.Since(start)
}

// bare copies src over one libp2p stream from a to b, nothing else.
func bare(b *testing.B, from, to host.Host, src []byte) time.Duration {
	from.SetStreamHandler(protoBare, func(s network.Stream) {
		s.Write(src)
		s.Close()
	})
	start := time.Now()
	s, err := to.NewStream(context.Background(), from.ID(), protoBare)
	if err != nil {
		b.Fatal(err)
	}
	s.CloseWrite()
	n, _ := io.Copy(io.Discard, s)
	s.Close()
	if n != int64(len(src)) {
		b.Fatalf("bare stream moved %d bytes", n)
	}
	return time.Since(start)
}

// floor moves src over one libp2p stream doing only the work no fetch
// can skip, each step on its own goroutine so that all of them overlap:
// the sender hashes every MiB (its check against bit rot) and writes it,
// the receiver hashes every MiB (its check of the network) and writes it
// to a file in dir, synced at the end. Plain BLAKE3 of whole buffers costs
// less than checking them against a tree, so no fetch can beat this time
// on the same machine: it is the ceiling of fetch/bare.
func floor(b *testing.B, from, to host.Host, src []byte, dir string) time.Duration {
	const chunk = 1 << 20
	hashAll := func(in <-chan []byte, out chan<- []byte) {
		for c := range in {
			h := blake3.New(32, nil)
			h.Write(c)
			h.Sum(nil)
			out <- c
		}
		close(out)
	}
	from.SetStreamHandler(protoBare, func(s network.Stream) {
		defer s.Close()
		chunks, hashed := make(chan []byte, 4), make(chan []byte, 4)
		go hashAll(chunks, hashed)
		go func() {
			for off := 0; off < len(src); off += chunk {
				chunks <- src[off:min(off+chunk, len(src))]
			}
			close(chunks)
		}()
		for c := range hashed {
			if _, err := s.Write(c); err != nil {
				return
			}
		}
	})
	f, err := os.Create(filepath.Join(dir, "floor"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	s, err := to.NewStream(context.Background(), from.ID(), protoBare)
	if err != nil {
		b.Fatal(err)
	}
	s.CloseWrite()
	got, hashed, free := make(chan []byte, 4), make(chan []byte, 4), make(chan []byte, 8)
	for range cap(free) {
		free <- make([]byte, chunk)
	}
	go hashAll(got, hashed)
	go func() {
		defer close(got)
		for {
			c := <-free
			n, err := io.ReadFull(s, c)
			if n > 0 {
				got <- c[:n]
			}
			if err != nil {
				return
			}
		}
	}()
	var n int64
	for c := range hashed {
		if _, err := f.WriteAt(c, n); err != nil {
			b.Fatal(err)
		}
		n += int64(len(c))
		free <- c[:cap(c)]
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	s.Close()
	if n != int64(len(src)) {
		b.Fatalf("floor moved %d bytes", n)
	}
	return time.Since(start)
}

// BenchmarkFetch fetches one blob end to end (protocol, verification, the
// blob store's durable write) and, in the same run over the same hosts,
// copies the same bytes over a bare libp2p stream and over a raw loopback
// net.Conn, for each transport and security choice.
func BenchmarkFetch(b *testing.B) {
	size := benchSize()
	src := testkit.RandomBytes(int(size), 42)
	cases := []struct {
		name   string
		listen string
		sec    p2p.Security
	}{
		{"tcp-tls", "/ip4/127.0.0.1/tcp/0", p2p.SecurityTLS},
		{"tcp-noise", "/ip4/127.0.0.1/tcp/0", p2p.SecurityNoise},
		{"quic", "/ip4/127.0.0.1/udp/0/quic-v1", p2p.SecurityTLS},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			mk := func() host.Host {
				cfg := p2p.DefaultHostConfig()
				cfg.ListenAddrs = []string{tc.listen}
				cfg.Security = tc.sec
				h, err := p2p.NewHost(cfg)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { h.Close() })
				return h
			}
			ah, bh := mk(), mk()
			link(bh, ah)
			as := diskStore(b, b.TempDir())
			ref := put(b, as, src)
			mustService(b, ah, as, ServiceConfig{})
			var oursT, bareT, rawT, floorT, ttfb, oursCPU, bareCPU time.Duration
			for b.Loop() {
				rawT += rawTCP(b, src)
				floorT += floor(b, ah, bh, src, b.TempDir())
				c0 := processCPU()
				bareT += bare(b, ah, bh, src)
				bareCPU += processCPU() - c0
				bs := diskStore(b, b.TempDir())
				c := mustClient(b, bh, bs, ClientConfig{})
				start, c0 := time.Now(), processCPU()
				first := true
				res, err := c.Fetch(context.Background(), ref, []peer.ID{ah.ID()}, func(p Progress) {
					if first && p.Received > 0 {
						ttfb += time.Since(start)
						first = false
					}
				})
				oursT += time.Since(start)
				oursCPU += processCPU() - c0
				if err != nil || res.Size != size {
					b.Fatalf("fetch: %+v %v", res, err)
				}
				bs.Delete(ref)
			}
			mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
			b.ReportMetric(mbps(oursT), "fetch-MB/s")
			b.ReportMetric(mbps(bareT), "bare-stream-MB/s")
			b.ReportMetric(mbps(rawT), "raw-tcp-MB/s")
			b.ReportMetric(bareT.Seconds()/oursT.Seconds(), "fetch/bare")
			b.ReportMetric(rawT.Seconds()/oursT.Seconds(), "fetch/raw")
			b.ReportMetric(float64(ttfb.Microseconds())/1000/float64(b.N), "ttfb-ms")
			// Cores busy: the bare stream already keeps both of a 2-core
			// machine's cores busy, and a fetch does more per byte (it
			// hashes on both sides and writes the store).
			b.ReportMetric(bareCPU.Seconds()/bareT.Seconds(), "bare-cores-busy")
			b.ReportMetric(oursCPU.Seconds()/oursT.Seconds(), "fetch-cores-busy")
			b.ReportMetric(oursCPU.Seconds()/bareCPU.Seconds(), "fetch/bare-cpu")
			// The ceiling: the least work of a fetch, overlapped, over the
			// bare stream's time.
			b.ReportMetric(bareT.Seconds()/floorT.Seconds(), "floor/bare")
			b.ReportMetric(floorT.Seconds()/oursT.Seconds(), "fetch/floor")
		})
	}
}

// processCPU returns the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
