package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore/baotree"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/control"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/p2p"
)

// stranger is a bare libp2p host on loopback, connected to p's daemon,
// speaking syncnode's protocols itself.
func stranger(t *testing.T, p *proc) host.Host {
	t.Helper()
	cfg := p2p.DefaultHostConfig()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	h, err := p2p.NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	b, err := os.ReadFile(filepath.Join(p.dir, control.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var dcfg control.Config
	if err := json.Unmarshal(b, &dcfg); err != nil {
		t.Fatal(err)
	}
	id, err := peer.Decode(p.id)
	if err != nil {
		t.Fatal(err)
	}
	ai := peer.AddrInfo{ID: id}
	for _, a := range dcfg.Listen {
		ai.Addrs = append(ai.Addrs, ma.StringCast(a))
	}
	if err := h.Connect(t.Context(), ai); err != nil {
		t.Fatal(err)
	}
	return h
}

// heapInUse reads the daemon's Go heap in use from its metrics.
func heapInUse(t *testing.T, p *proc) int64 {
	t.Helper()
	var buf bytes.Buffer
	if err := p.cl.Metrics(t.Context(), &buf); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return int64(f)
		}
	}
	t.Fatal("no heap figure in the daemon's metrics")
	return 0
}

type haveRequest struct {
	Ref []byte `msgpack:"r"`
}

type haveResponse struct {
	Code uint8 `msgpack:"c"`
	Have bool  `msgpack:"h"`
	Size int64 `msgpack:"s"`
}

// sayHave has h answer every "have" question: yes, size bytes.
func sayHave(h host.Host, size int64) {
	h.SetStreamHandler(p2p.ProtoHaveBlob, func(st network.Stream) {
		defer st.Close()
		var req haveRequest
		p2p.ReadMsg(bufio.NewReader(st), st, &req, 4<<10, 5*time.Second)
		p2p.WriteMsg(st, haveResponse{Have: true, Size: size}, 5*time.Second)
	})
}

// TestHostileProviderCannotExhaustMemory: a stranger announces itself in
// the DHT as the provider of a blob, says it has it, and answers the
// daemon's fetch with a blob of 2^50 bytes (a 4 TiB tree), then with one
// of 200 GiB whose tree it starts sending and breaks off. The daemon
// refuses or fails the fetch and stays up, its heap growing by no more
// than a few MiB.
func TestHostileProviderCannotExhaustMemory(t *testing.T) {
	t.Parallel()
	p := newProc(t, "victim", time.Hour)
	h := stranger(t, p)
	d, err := p2p.NewDHT(h, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, size := range []int64{1 << 50, 200 << 30} {
		ref := syncnode.RefFromHash([32]byte{byte(size >> 40), 7})
		sayHave(h, size)
		var asked atomic.Int64
		h.SetStreamHandler(p2p.ProtoGetBlob, func(st network.Stream) {
			defer st.Close()
			asked.Add(1)
			var req getRequest
			p2p.ReadMsg(bufio.NewReader(st), st, &req, 4<<10, 5*time.Second)
			treeLen := baotree.OutboardSize(size)
			p2p.WriteMsg(st, getResponse{Size: size, TreeLen: treeLen, Len: req.Len}, 5*time.Second)
			st.Write(bytes.Repeat([]byte{0xab}, 64<<10)) // a start of tree, then nothing
		})
		testkit.WaitFor(t, 10*time.Second, "the stranger's provider record", func() bool {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			return d.Provide(ctx, ref) == nil
		})
		before := heapInUse(t, p)
		var last api.FetchEvent
		err := p.cl.FetchBlob(t.Context(), ref.String(), api.FetchOptions{}, func(ev api.FetchEvent) { last = ev })
		t.Logf("blob of %d bytes: fetch ended with %v, last event %+v", size, err, last)
		if asked.Load() == 0 {
			t.Fatalf("the daemon never asked the hostile provider (last event %+v)", last)
		}
		if _, err := p.cl.Status(p.ctx()); err != nil {
			t.Fatalf("the daemon is down after a hostile provider announced %d bytes: %v\n%s", size, err, p.logTail())
		}
		if grew := heapInUse(t, p) - before; grew > 32<<20 {
			t.Fatalf("a hostile provider announcing %d bytes grew the heap by %d MiB", size, grew>>20)
		}
		if w, err := p.cl.Why(p.ctx(), ref.String()); err != nil || w.Held {
			t.Fatalf("why after the hostile fetch: %+v %v", w, err)
		}
	}
}

// TestJoinFloodBounded: a stranger opens hundreds of join streams, each
// announcing a large frame and sending three bytes. The daemon's heap
// grows by a few KiB per stream at most, not by the announced sizes.
func TestJoinFloodBounded(t *testing.T) {
	t.Parallel()
	p := newProc(t, "victim", time.Hour)
	h := stranger(t, p)
	id, _ := peer.Decode(p.id)
	before := heapInUse(t, p)
	var streams []network.Stream
	for _, announced := range []uint64{p2p.MaxFrame - 1, 15 << 10} {
		for range 300 {
			st, err := h.NewStream(t.Context(), id, p2p.ProtoJoin)
			if err != nil {
				break // the resource manager's stream limit: fine
			}
			var b [binary.MaxVarintLen64]byte
			st.Write(b[:binary.PutUvarint(b[:], announced)])
			streams = append(streams, st)
		}
	}
	time.Sleep(200 * time.Millisecond) // let the daemon read what was sent
	grew := heapInUse(t, p) - before
	t.Logf("%d join streams open; heap grew %d KiB", len(streams), grew>>10)
	if grew > 32<<20 {
		t.Fatalf("%d join streams of 3 bytes grew the heap by %d MiB", len(streams), grew>>20)
	}
	for _, st := range streams {
		st.Reset()
	}
	if _, err := p.cl.Status(p.ctx()); err != nil {
		t.Fatalf("the daemon is down: %v", err)
	}
}

// TestGarbageTreeDroppedAtItsFirstNode: a stranger that says it holds a
// 64 GiB blob answers the daemon's fetch with a whole tree of the
// announced 256 MiB, all garbage, as fast as loopback takes it. The daemon
// drops it at its first node: the stranger gets to send a few MiB at most
// and the daemon's heap grows by no more than a few MiB, where reading the
// tree whole before checking it would have taken 256 MiB.
func TestGarbageTreeDroppedAtItsFirstNode(t *testing.T) {
	t.Parallel()
	p := newProc(t, "victim", time.Hour)
	h := stranger(t, p)
	d, err := p2p.NewDHT(h, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const size = 64 << 30
	ref := syncnode.RefFromHash([32]byte{9, 9, 9})
	sayHave(h, size)
	var sent atomic.Int64
	h.SetStreamHandler(p2p.ProtoGetBlob, func(st network.Stream) {
		defer st.Close()
		var req getRequest
		p2p.ReadMsg(bufio.NewReader(st), st, &req, 4<<10, 5*time.Second)
		treeLen := baotree.OutboardSize(size)
		p2p.WriteMsg(st, getResponse{Size: size, TreeLen: treeLen, Len: req.Len}, 5*time.Second)
		chunk := bytes.Repeat([]byte{0xab}, 1<<20)
		binary.LittleEndian.PutUint64(chunk, size) // a true length, then garbage
		for off := int64(0); off < treeLen; off += int64(len(chunk)) {
			st.SetWriteDeadline(time.Now().Add(5 * time.Second))
			k, err := st.Write(chunk[:min(int64(len(chunk)), treeLen-off)])
			sent.Add(int64(k))
			if err != nil {
				return
			}
		}
	})
	testkit.WaitFor(t, 10*time.Second, "the stranger's provider record", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		return d.Provide(ctx, ref) == nil
	})
	before := heapInUse(t, p)
	err = p.cl.FetchBlob(t.Context(), ref.String(), api.FetchOptions{}, nil)
	grew := heapInUse(t, p) - before
	t.Logf("fetch: %v; the stranger sent %d KiB of its 256 MiB tree; the heap grew by %d KiB", err, sent.Load()>>10, grew>>10)
	if err == nil {
		t.Fatal("a garbage tree was taken")
	}
	if sent.Load() > 32<<20 {
		t.Fatalf("the daemon read %d MiB of a tree wrong from its first node", sent.Load()>>20)
	}
	if grew > 32<<20 {
		t.Fatalf("a garbage tree grew the heap by %d MiB", grew>>20)
	}
}
