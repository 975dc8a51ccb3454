package syncgroup

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

func TestStoreRoundTripAndContinue(t *testing.T) {
	dir := t.TempDir()
	db, err := kv.Open(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	adminKey, admin := key(t)
	g, err := Create("photos", []string{"photos/"}, true, adminKey, syncnode.Server, []string{"/ip4/127.0.0.1/tcp/9"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	st := NewStore(db)
	prio := syncnode.Priority{DevType: syncnode.Server, ServerTime: t0}
	if err := st.SaveAll(g, prio); err != nil {
		t.Fatal(err)
	}
	// More rows than one transaction chunk, saved as they are written.
	var written []Row
	for i := range 3*saveChunk + 7 {
		r, err := g.Put(fmt.Sprintf("photos/%04d", i), []byte{0xa1, 'x'}, t0.Add(time.Duration(i)))
		if err != nil {
			t.Fatal(err)
		}
		written = append(written, r)
	}
	if err := st.Save(g, written, prio); err != nil {
		t.Fatal(err)
	}
	del, _ := g.Delete("photos/0003", t0.Add(time.Hour))
	if err := st.Save(g, []Row{del}, prio); err != nil {
		t.Fatal(err)
	}
	live := len(g.Rows().List("photos/"))
	db.Close()

	db, err = kv.Open(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	loaded, err := NewStore(db).Load(admin, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 1 {
		t.Fatalf("loaded %d groups", len(loaded))
	}
	h := loaded[0].Group
	if loaded[0].Prio.DevType != syncnode.Server || !loaded[0].Prio.ServerTime.Equal(t0) {
		t.Errorf("priority %+v", loaded[0].Prio)
	}
	if got, want := len(h.Rows().List("photos/")), live; got != want || want != 3*saveChunk+6 {
		t.Errorf("%d live rows after restart, want %d", got, want)
	}
	if r, _ := h.Rows().Get("photos/0003"); !r.Deleted {
		t.Error("tombstone lost")
	}
	if m, ok := h.Member(admin); !ok || m.DevType != syncnode.Server {
		t.Errorf("membership lost: %+v", m)
	}
	if fmt.Sprint(h.Rows().VV()) != fmt.Sprint(g.Rows().VV()) {
		t.Errorf("vector %v, want %v", h.Rows().VV(), g.Rows().VV())
	}
	// Writing after the restart continues the sequence and the clock.
	r, err := h.Put("photos/new", []byte{0xc0}, t0) // physical clock went back
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != del.Seq+1 || r.TS.Compare(del.TS) <= 0 {
		t.Errorf("write after restart: seq %d ts %v, last before: seq %d ts %v", r.Seq, r.TS, del.Seq, del.TS)
	}
	if err := NewStore(db).Remove(h); err != nil {
		t.Fatal(err)
	}
	if l, _ := NewStore(db).Load(admin, time.Minute); len(l) != 0 {
		t.Errorf("%d groups after remove", len(l))
	}
	// Where the writes stood outlives the replica: a fresh one resumed
	// from it writes past every sequence number and timestamp used.
	res, err := NewStore(db).Resumed(h.Spec().ID)
	if err != nil || res.Seq != r.Seq || res.TS.Compare(r.TS) < 0 {
		t.Fatalf("resumed %+v, %v; last write seq %d ts %v", res, err, r.Seq, r.TS)
	}
	fresh, err := NewGroup(h.Spec(), admin, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	fresh.ResumeFrom(res)
	lrows, err := fresh.Leave(t0) // any write of this device's: the sequence is one
	if err != nil {
		t.Fatal(err)
	}
	next := lrows[len(lrows)-1]
	if next.Seq != r.Seq+1 || next.TS.Compare(r.TS) <= 0 {
		t.Errorf("write after resuming: seq %d ts %v, last before: seq %d ts %v", next.Seq, next.TS, r.Seq, r.TS)
	}
	// The resumed replica holds none of the rows before: its vector does
	// not claim them; stored and read back, it still writes past them.
	if got := fresh.Rows().VV()[admin]; got != 0 {
		t.Errorf("the resumed replica's vector claims this device's rows up to %d", got)
	}
	if err := NewStore(db).SaveAll(fresh, syncnode.Priority{}); err != nil {
		t.Fatal(err)
	}
	back, err := NewStore(db).Load(admin, time.Minute)
	if err != nil || len(back) != 1 {
		t.Fatalf("load: %d groups, %v", len(back), err)
	}
	if again, _ := back[0].Group.Leave(t0); again[len(again)-1].Seq != next.Seq+1 {
		t.Errorf("write after a restart of the resumed replica: seq %d, want %d", again[len(again)-1].Seq, next.Seq+1)
	}
}

// TestStoredRowsAreReadBackWhole: once the store holds a group's data
// rows, only their entries stay in memory; every read (a key, a page, the
// rows a peer lacks, a reopen) gives them back whole and signed, and a
// store that gives back another version is an error, never a row passed
// off as the replica's.
func TestStoredRowsAreReadBackWhole(t *testing.T) {
	db, st, g, admin := storedGroup(t)
	if err := st.SaveAll(g, syncnode.Priority{}); err != nil {
		t.Fatal(err)
	}
	var written []Row
	for i := range 40 {
		r, err := g.Put(fmt.Sprintf("photos/%02d", i), []byte{0xa1, byte('a' + i%26)}, t0.Add(time.Duration(i)))
		if err != nil {
			t.Fatal(err)
		}
		written = append(written, r)
	}
	unsaved, err := g.Put("photos/zz", []byte{0xa1, 'z'}, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Save(g, written, syncnode.Priority{}); err != nil {
		t.Fatal(err)
	}
	var items []item
	g.rows.rows.Ascend(func(it item) bool { items = append(items, it); return true })
	for _, it := range items {
		k, held := it.key, it.e.row != nil
		if want := k == unsaved.Key || strings.HasPrefix(k, memberPrefix); held != want {
			t.Errorf("%q whole in memory: %v, want %v", k, held, want)
		}
	}
	check := func(what string, got []Row) {
		t.Helper()
		want := append(slices.Clone(written), unsaved)
		if len(got) != len(want) {
			t.Fatalf("%s: %d rows, want %d", what, len(got), len(want))
		}
		for i := range got {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Fatalf("%s: row %d is %+v, want %+v", what, i, got[i], want[i])
			}
			if err := VerifyRow(g.ID(), got[i]); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
	}
	page, _, err := g.Rows().ListFrom("photos/", "", -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("a page", page)
	check("what a peer lacks", missing(t, g.Rows(), VersionVector{}, []string{"photos/"}))
	if r, ok, err := g.Rows().Lookup("photos/07"); err != nil || !ok || !reflect.DeepEqual(r, written[7]) {
		t.Fatalf("lookup: %+v %v %v", r, ok, err)
	}
	if err := st.Save(g, []Row{unsaved}, syncnode.Priority{}); err != nil {
		t.Fatal(err)
	}
	back, err := NewStore(db).Load(admin, time.Minute)
	if err != nil || len(back) != 1 {
		t.Fatalf("load: %d groups, %v", len(back), err)
	}
	page, _, err = back[0].Group.Rows().ListFrom("photos/", "", -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("a page after a reopen", page)

	// The store gives back a version the replica does not hold.
	if err := db.Update(func(txn *badger.Txn) error {
		return kv.Set(txn, rowKey(g.ID(), "photos/07"), kv.KindRow, written[8])
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.Rows().Lookup("photos/07"); !errors.Is(err, syncnode.ErrCorruptRecord) {
		t.Errorf("lookup of a key the store holds another row at: %v", err)
	}
	if _, err := g.Rows().Missing(VersionVector{}, []string{"photos/"}); !errors.Is(err, syncnode.ErrCorruptRecord) {
		t.Errorf("rows a peer lacks, one of them another in the store: %v", err)
	}
	if _, ok := g.Rows().Get("photos/07"); ok {
		t.Error("Get gave a row the store cannot give back")
	}
}

// TestRowsReadBackInOneScan: many rows read back at once, dense or
// sparse among the stored keys, come back as a lookup of each gives
// them; one the store lost is an error.
func TestRowsReadBackInOneScan(t *testing.T) {
	db, st, g, _ := storedGroup(t)
	var written []Row
	for i := range 400 {
		r, err := g.Put(fmt.Sprintf("photos/%03d", i), []byte{0xa1, byte(i)}, t0.Add(time.Duration(i)))
		if err != nil {
			t.Fatal(err)
		}
		written = append(written, r)
	}
	if err := st.SaveAll(g, syncnode.Priority{}); err != nil {
		t.Fatal(err)
	}
	load := st.loader(g.ID())
	for _, every := range []int{1, 3, 10} {
		var keys []string
		var want []Row
		for i := 0; i < len(written); i += every {
			keys, want = append(keys, written[i].Key), append(want, written[i])
		}
		got, err := load(keys)
		if err != nil {
			t.Fatalf("every %d: %v", every, err)
		}
		for i := range want {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Fatalf("every %d: row %d is %+v, want %+v", every, i, got[i], want[i])
			}
		}
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Delete(rowKey(g.ID(), "photos/200")) }); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range written {
		keys = append(keys, r.Key)
	}
	if _, err := load(keys); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("a row the store lost: %v", err)
	}
}

// storedGroup returns a database, a store over it, and a group of one
// device, its admin, not saved yet.
func storedGroup(t *testing.T) (*badger.DB, *Store, *Group, peer.ID) {
	t.Helper()
	db, err := kv.Open(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	adminKey, admin := key(t)
	g, err := Create("photos", []string{"photos/"}, false, adminKey, syncnode.Normal, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	return db, NewStore(db), g, admin
}

// TestIdleSaveWritesNothing: a save with no rows that would write the
// group's record again unchanged (a round that brought nothing) commits
// nothing, nor does one whose only changes are a distance less than
// DistanceLag away and a server time less than ServerTimeLag later; any
// other change, a distance or server time further on, or a save after
// the replica was removed, is written and read back.
func TestIdleSaveWritesNothing(t *testing.T) {
	db, st, g, admin := storedGroup(t)
	version := func() uint64 {
		txn := db.NewTransaction(false)
		defer txn.Discard()
		return txn.ReadTs()
	}
	prio := syncnode.Priority{DevType: syncnode.Normal, ServerTime: t0}
	if err := st.SaveAll(g, prio); err != nil {
		t.Fatal(err)
	}
	save := func(what string, p syncnode.Priority, writes bool) {
		t.Helper()
		before := version()
		if err := st.Save(g, nil, p); err != nil {
			t.Fatal(err)
		}
		if wrote := version() != before; wrote != writes {
			t.Fatalf("%s: wrote %v, want %v", what, wrote, writes)
		}
	}
	save("the same record", prio, false)
	prio.ServerTime = t0.Add(ServerTimeLag - time.Second)
	save("a server time within the lag", prio, false)
	prio.Distance = 1.5
	save("another distance", prio, true)
	prio.Distance = 1.5 - DistanceLag/2
	save("a distance within the lag", prio, false)
	prio.Distance = 1.5
	save("the distance written", prio, false)
	prio.ServerTime = prio.ServerTime.Add(ServerTimeLag)
	save("a server time the lag on from the last written", prio, true)
	prio.ServerTime = t0
	save("an earlier server time", prio, true)
	g.Rows().LearnedFor(VersionVector{admin: 40}, nil)
	save("a later sequence number of this device", prio, true)
	save("the same again", prio, false)
	if err := st.Remove(g); err != nil {
		t.Fatal(err)
	}
	save("after the replica was removed", prio, true)
	back, err := st.Load(admin, time.Minute)
	if err != nil || len(back) != 1 {
		t.Fatalf("read back %d groups: %v", len(back), err)
	}
	if back[0].Prio.Distance != 1.5 || !back[0].Prio.ServerTime.Equal(t0) {
		t.Fatalf("read back priority %+v, want the last one written %+v", back[0].Prio, prio)
	}
}
