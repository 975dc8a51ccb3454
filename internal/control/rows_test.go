package control

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
)

// apiWrite is one write through the control API and what it answered.
type apiWrite struct {
	key     string
	seq     uint64
	deleted bool
	value   string
	err     error
}

// TestConcurrentWritesThroughTheAPI has many clients of one daemon write
// and delete one shared key and keys of their own at once, while a member
// takes the pushes: every write the API answered without an error is
// accounted for. Its sequence number is one of a gap-free run, and on
// each key the version with the highest one wins, at the daemon and, once
// a round has run, at the member.
func TestConcurrentWritesThroughTheAPI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "daemon")
	srv := runDaemonWith(t, dir, InitOptions{NoLAN: true})
	cfg, token, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	cl := api.NewClient(cfg.API, token)
	member := nodetest.Start(t)
	spec, err := srv.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		t.Fatal(err)
	}
	g := string(spec.ID)
	nodetest.Join(t, srv, member, spec.ID, syncnode.Normal)

	const workers, each = 8, 30
	writes := make([][]apiWrite, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				key := "photos/shared"
				if i%2 == 1 {
					key = fmt.Sprintf("photos/own-%d", w)
				}
				var out apiWrite
				if i%5 == 4 {
					d, err := cl.DeleteRow(t.Context(), g, key)
					out = apiWrite{key: d.Deleted, seq: d.Seq, deleted: true, err: err}
				} else {
					r, err := cl.PutRow(t.Context(), api.RowRequest{Group: g, Key: key, Value: []byte(fmt.Sprintf(`{"w": %d, "i": %d}`, w, i))})
					out = apiWrite{key: r.Key, seq: r.Seq, value: string(r.Value), err: err}
				}
				if out.err == nil && out.key != key {
					t.Errorf("a write of %s answered key %q", key, out.key)
				}
				writes[w] = append(writes[w], out)
			}
		})
	}
	wg.Wait()

	want := map[string]apiWrite{}
	var seqs []uint64
	for _, w := range slices.Concat(writes...) {
		if w.err != nil {
			t.Logf("%s: %v", w.key, w.err)
			continue
		}
		seqs = append(seqs, w.seq)
		if cur, ok := want[w.key]; !ok || w.seq > cur.seq {
			want[w.key] = w
		}
	}
	if len(seqs) == 0 {
		t.Fatal("every write failed")
	}
	slices.Sort(seqs)
	for i := range seqs[1:] {
		if seqs[i+1] != seqs[i]+1 {
			t.Fatalf("sequence numbers of the writes: %d after %d (reused or skipped)", seqs[i+1], seqs[i])
		}
	}
	// A round from the member brings it every version that wins at the
	// daemon.
	if err := member.SyncNow(spec.ID); err != nil {
		t.Fatal(err)
	}
	for key, w := range want {
		r, err := cl.GetRow(t.Context(), g, key)
		switch {
		case w.deleted && err == nil:
			t.Errorf("%s: the daemon has %+v, want the tombstone #%d", key, r, w.seq)
		case !w.deleted && (err != nil || r.Seq != w.seq || string(r.Value) != w.value):
			t.Errorf("%s: the daemon has %+v (%v), want #%d %s", key, r, err, w.seq, w.value)
		}
		row, ok, err := member.GetRow(spec.ID, key)
		if err != nil || ok == w.deleted || ok && (row.Writer != srv.ID() || row.Seq != w.seq) {
			t.Errorf("%s: the member has %+v (live %v, %v), want #%d (deleted %v)", key, row, ok, err, w.seq, w.deleted)
		}
	}
}
