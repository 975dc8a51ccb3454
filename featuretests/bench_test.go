package featuretests

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/vmihailenco/msgpack/v5"
	"lukechampine.com/blake3"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
)

// streamThroughput measures one bare libp2p stream from src to dst moving
// n bytes: the baseline a blob transfer is compared with.
func streamThroughput(b *testing.B, src, dst *node.Node, n int64) float64 {
	const proto = protocol.ID("/syncnode-bench/bulk/1.0.0")
	buf := make([]byte, 1<<20)
	nodetest.Host(src).SetStreamHandler(proto, func(s network.Stream) {
		defer s.Close()
		for left := n; left > 0; left -= int64(len(buf)) {
			if _, err := s.Write(buf[:min(left, int64(len(buf)))]); err != nil {
				return
			}
		}
	})
	defer nodetest.Host(src).RemoveStreamHandler(proto)
	nodetest.Host(dst).Peerstore().AddAddrs(src.ID(), src.AddrInfo().Addrs, time.Hour)
	start := time.Now()
	s, err := nodetest.Host(dst).NewStream(b.Context(), src.ID(), proto)
	if err != nil {
		b.Fatal(err)
	}
	got, err := io.Copy(io.Discard, s)
	if err != nil || got != n {
		b.Fatalf("bulk stream: %d bytes, %v", got, err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// floorPull moves blobs × size bytes from the devices to dst, one stream per
// blob and 16 at once (round robin over the devices), doing only the work
// no pull can skip: the sender hashes the blob (its check against bit
// rot), the receiver hashes it (its check of the network) and writes it
// durably into dir (a new file synced, renamed into place, the directory
// synced). No rows, no protocol, no shares: its time is the least any
// design of the pull can take on this machine.
func floorPull(b *testing.B, devs []*node.Node, dst *node.Node, blobs, size int) time.Duration {
	const proto = protocol.ID("/syncnode-bench/floor/1.0.0")
	blob := make([]byte, size)
	newRandReader(size, 99).Read(blob)
	hash := func(p []byte) { h := blake3.New(32, nil); h.Write(p); h.Sum(nil) }
	for _, d := range devs {
		nodetest.Host(d).SetStreamHandler(proto, func(s network.Stream) {
			defer s.Close()
			hash(blob)
			s.Write(blob)
		})
		defer nodetest.Host(d).RemoveStreamHandler(proto)
	}
	dir := b.TempDir()
	d, err := os.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	start := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, size)
			for j := range jobs {
				s, err := nodetest.Host(dst).NewStream(b.Context(), devs[j%len(devs)].ID(), proto)
				if err != nil {
					b.Error(err)
					return
				}
				s.CloseWrite()
				_, err = io.ReadFull(s, buf)
				s.Close()
				if err != nil {
					b.Error(err)
					return
				}
				hash(buf)
				name := filepath.Join(dir, fmt.Sprint(j))
				f, err := os.Create(name + ".tmp")
				if err == nil {
					_, err = f.Write(buf)
				}
				if err == nil {
					err = f.Sync()
				}
				if err == nil {
					err = f.Close()
				}
				if err == nil {
					err = os.Rename(name+".tmp", name)
				}
				if err == nil {
					err = d.Sync()
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for j := range blobs {
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	return time.Since(start)
}

// BenchmarkServerPulls200BlobsFrom3Devices times a server pulling 200
// blobs of 1 MiB, referenced by rows that 3 devices write at once, with
// their shares, and compares it with the least work any pull does
// (floorPull) and with the time the same bytes take on one bare libp2p
// stream. Each device writes its rows one by one (rows=each), as an app
// saving photos as they are taken does, or as one batch (rows=batch), as
// a folder put does.
func BenchmarkServerPulls200BlobsFrom3Devices(b *testing.B) {
	b.Run("rows=each", func(b *testing.B) { benchServerPull(b, false) })
	b.Run("rows=batch", func(b *testing.B) { benchServerPull(b, true) })
}

func benchServerPull(b *testing.B, batch bool) {
	const blobs, size = 200, 1 << 20
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		devs := []*node.Node{benchNode(b), benchNode(b), benchNode(b)}
		server := benchNode(b)
		spec, err := devs[0].CreateGroup("bench", []string{"bench/"}, true, syncnode.Normal)
		if err != nil {
			b.Fatal(err)
		}
		g := spec.ID
		for _, d := range devs[1:] {
			benchJoin(b, devs[0], d, g, syncnode.Normal)
		}
		benchJoin(b, devs[0], server, g, syncnode.Server)
		rate := streamThroughput(b, devs[1], server, 256<<20)
		floorT := floorPull(b, devs, server, blobs, size)
		var refs []syncnode.BlobRef
		for j := range blobs {
			d := devs[j%3]
			info, err := d.PutBlob(b.Context(), newRandReader(size, uint64(j)))
			if err != nil {
				b.Fatal(err)
			}
			refs = append(refs, info.Ref)
		}
		b.StartTimer()
		start, cpu0 := time.Now(), processCPU(b)
		var writers sync.WaitGroup
		for d, dev := range devs {
			writers.Go(func() {
				var kvs []syncgroup.KV
				for j := d; j < len(refs); j += len(devs) {
					v, err := msgpack.Marshal(map[string]any{"b": refs[j]})
					if err != nil {
						b.Error(err)
						return
					}
					kvs = append(kvs, syncgroup.KV{Key: fmt.Sprintf("bench/%03d", j), Value: v})
				}
				if batch {
					if _, err := dev.PutRows(g, kvs); err != nil {
						b.Error(err)
					}
					return
				}
				for _, kv := range kvs {
					if _, err := dev.PutRow(g, kv.Key, kv.Value); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		writers.Wait()
		if b.Failed() {
			b.FailNow()
		}
		deadline := time.Now().Add(2 * time.Minute)
		for _, ref := range refs {
			for !server.HasBlob(ref) || len(mustShares(b, server, ref)) == 0 {
				if time.Now().After(deadline) {
					b.Fatalf("blob %s not on the server with its shares after 2 minutes", ref)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		elapsed, cpu := time.Since(start), processCPU(b)-cpu0
		b.StopTimer()
		b.ReportMetric(cpu.Seconds()/elapsed.Seconds(), "cores-busy")
		ideal := float64(blobs*size) / rate
		b.ReportMetric(float64(blobs*size)/elapsed.Seconds()/1e6, "MB/s")
		b.ReportMetric(rate/1e6, "bare-stream-MB/s")
		b.ReportMetric(elapsed.Seconds()/ideal, "x-bare-stream-time")
		// The ceiling: the least work of the pull, overlapped, against
		// the bare stream.
		b.ReportMetric(ideal/floorT.Seconds(), "floor/bare")
		b.ReportMetric(floorT.Seconds()/elapsed.Seconds(), "pull/floor")
		for _, n := range append(devs, server) {
			n.Close()
		}
	}
}

func mustShares(b *testing.B, n *node.Node, ref syncnode.BlobRef) map[syncnode.GroupID]int {
	sh, err := n.BlobShares(ref)
	if err != nil {
		b.Fatal(err)
	}
	return sh
}

func benchNode(b *testing.B) *node.Node { return nodetest.Open(b, config(b, b.TempDir())) }

func benchJoin(b *testing.B, admin, n *node.Node, g syncnode.GroupID, dev syncnode.DevType) {
	inv, err := admin.Invite(g, n.ID(), dev, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := n.JoinGroup(b.Context(), inv); err != nil {
		b.Fatal(err)
	}
}

// randReader yields size pseudo-random bytes.
type randReader struct {
	left  int
	state uint64
}

func newRandReader(size int, seed uint64) *randReader {
	return &randReader{size, seed*0x9e3779b97f4a7c15 + 1}
}

func (r *randReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.left)
	for i := range n {
		r.state ^= r.state << 13
		r.state ^= r.state >> 7
		r.state ^= r.state << 17
		p[i] = byte(r.state)
	}
	r.left -= n
	return n, nil
}
