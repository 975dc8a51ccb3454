package node

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/syncgroup"
)

// write is one PutRow or DeleteRow call and what it returned.
type write struct {
	key string
	row syncgroup.Row
	err error
}

// winnerOf returns the version of key that wins on n, tombstones included.
func winnerOf(t *testing.T, n *Node, g syncnode.GroupID, key string) (syncgroup.Row, bool) {
	t.Helper()
	var row syncgroup.Row
	var ok bool
	if err := n.sync.With(g, func(gr *syncgroup.Group) error { row, ok = gr.Rows().Get(key); return nil }); err != nil {
		t.Fatal(err)
	}
	return row, ok
}

// vvOf returns n's version vector entry for writer w in g.
func vvOf(t *testing.T, n *Node, g syncnode.GroupID, w peer.ID) uint64 {
	t.Helper()
	var s uint64
	if err := n.sync.With(g, func(gr *syncgroup.Group) error { s = gr.Rows().VV()[w]; return nil }); err != nil {
		t.Fatal(err)
	}
	return s
}

func sameVersion(a, b syncgroup.Row) bool {
	return a.Key == b.Key && a.Writer == b.Writer && a.Seq == b.Seq && a.TS == b.TS && a.Deleted == b.Deleted && string(a.Value) == string(b.Value)
}

// CheckWrites checks writes made by writer against the replicas of g on
// nodes: every call that returned no error is accounted for. On each key
// the winner everywhere is the returned version with the greatest
// timestamp, and the writer's sequence numbers of the calls are distinct
// and run without a gap from after before up to its vector entry.
func checkWrites(t *testing.T, writer *Node, nodes []*Node, g syncnode.GroupID, writes []write, before uint64) {
	t.Helper()
	want := map[string]syncgroup.Row{}
	var seqs []uint64
	for _, w := range writes {
		if w.err != nil {
			t.Logf("%s: %v", w.key, w.err)
			continue
		}
		if w.row.Key != w.key || w.row.Writer != writer.ID() {
			t.Fatalf("a write of %s returned %+v", w.key, w.row)
		}
		seqs = append(seqs, w.row.Seq)
		if cur, ok := want[w.key]; !ok || syncgroup.Wins(w.row, cur) {
			want[w.key] = w.row
		}
	}
	if len(seqs) == 0 {
		t.Fatal("every write failed")
	}
	slices.Sort(seqs)
	for i, s := range seqs {
		if s != before+uint64(i)+1 {
			t.Fatalf("sequence numbers of the writes: %d at %d, want %d (a number reused or skipped)", s, i, before+uint64(i)+1)
		}
	}
	last := seqs[len(seqs)-1]
	if got := vvOf(t, writer, g, writer.ID()); got != last {
		t.Fatalf("the writer's vector entry is %d, its last write %d", got, last)
	}
	for key, w := range want {
		if got, ok := winnerOf(t, writer, g, key); !ok || !sameVersion(got, w) {
			t.Fatalf("winner of %s at the writer: %+v, want the latest returned %+v", key, got, w)
		}
	}
	for _, n := range nodes {
		if n == writer {
			continue
		}
		testkit.WaitFor(t, 20*time.Second, "every write known to the other node", func() bool {
			return vvOf(t, n, g, writer.ID()) >= last
		})
		for key, w := range want {
			if got, ok := winnerOf(t, n, g, key); !ok || !sameVersion(got, w) {
				t.Fatalf("winner of %s at %s: %+v, want %+v", key, n.ID(), got, w)
			}
		}
	}
}

// TestConcurrentWritesFromOneNode has many goroutines of one node write
// and delete one shared key and keys of their own at once, some values
// naming a blob the node holds, while a second node syncs with it: every
// call that returned no error is accounted for on both nodes, no sequence
// number is reused or skipped, and the blob's shares still add up to the
// group's two.
func TestConcurrentWritesFromOneNode(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal)
	a, b := nodes[0], nodes[1]
	info, err := a.PutBlob(t.Context(), bytes.NewReader(testkit.RandomBytes(64<<10, 1)))
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 40
	// The other node runs rounds with the writer all along, besides the
	// pushes and the periodic rounds.
	stop := make(chan struct{})
	var syncing sync.WaitGroup
	syncing.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			b.SyncNow(g)
		}
	})
	before := vvOf(t, a, g, a.ID())
	writes := make([][]write, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			own := fmt.Sprintf("photos/own-%d", w)
			for i := range each {
				key := "photos/shared"
				if i%2 == 1 {
					key = own
				}
				var row syncgroup.Row
				var err error
				if i%5 == 4 {
					row, err = a.DeleteRow(g, key)
				} else {
					v, _ := msgpack.Marshal(map[string]any{"worker": w, "i": i})
					if i%3 == 0 {
						v, _ = msgpack.Marshal(map[string]any{"worker": w, "i": i, "photo": info.Ref})
					}
					row, err = a.PutRow(g, key, v)
				}
				writes[w] = append(writes[w], write{key: key, row: row, err: err})
			}
		})
	}
	wg.Wait()
	close(stop)
	syncing.Wait()
	checkWrites(t, a, nodes, g, slices.Concat(writes...), before)
	testkit.WaitFor(t, 10*time.Second, "the group's two shares of the blob", func() bool {
		total := 0
		for _, n := range nodes {
			sh, err := n.BlobShares(info.Ref)
			if err != nil {
				t.Fatal(err)
			}
			total += sh[g]
		}
		return total == 2
	})
}
