package kv

import (
	"bytes"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
)

type rec struct {
	A int    `msgpack:"a"`
	B string `msgpack:"b"`
}

func TestReopenKeepsRecords(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	key := Key(Groups, []byte("g1"))
	if err := db.Update(func(txn *badger.Txn) error { return Set(txn, key, KindGroup, rec{7, "x"}) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got rec
	if err := db.View(func(txn *badger.Txn) error { return Get(txn, key, KindGroup, &got) }); err != nil {
		t.Fatal(err)
	}
	if got != (rec{7, "x"}) {
		t.Fatalf("got %+v", got)
	}
	err = db.View(func(txn *badger.Txn) error { return Get(txn, Key(Groups, []byte("nope")), KindGroup, &got) })
	if !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
}

func TestDecodeRejectsCorruptAndForeign(t *testing.T) {
	good, err := Encode(KindGroup, rec{1, "abc"})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"empty":     nil,
		"short":     good[:2],
		"foreign":   []byte(`{"json":true}`),
		"wrongkind": Frame(KindSignpost, Payload(good)),
		"future":    append([]byte{magic, byte(KindGroup), 9}, good[3:]...),
		"truncated": good[:len(good)-2],
		"garbage":   Frame(KindGroup, []byte{0xc1, 0xff}),
	}
	for name, b := range cases {
		var v rec
		if err := Decode(KindGroup, b, &v); !errors.Is(err, syncnode.ErrCorruptRecord) {
			t.Errorf("%s: error %v, want ErrCorruptRecord", name, err)
		}
	}
	var v rec
	if err := Decode(KindGroup, good, &v); err != nil || v != (rec{1, "abc"}) {
		t.Fatalf("good record: %+v %v", v, err)
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := Encode(KindGroup, rec{1, "abc"})
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		var v rec
		if err := Decode(KindGroup, b, &v); err != nil && !errors.Is(err, syncnode.ErrCorruptRecord) {
			t.Fatalf("error %v does not wrap ErrCorruptRecord", err)
		}
	})
}

// Concurrent durable updates share syncs, and each caller returns only
// after a sync that started after its transaction committed.
func TestDurableGroupsSyncs(t *testing.T) {
	db, err := Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d := NewDurable(db)
	var committed atomic.Int64 // transactions committed so far
	var mu sync.Mutex
	var covered []int64 // per finished sync: transactions committed when it started
	d.sync = func() error {
		c := committed.Load()
		time.Sleep(5 * time.Millisecond)
		err := db.Sync()
		mu.Lock()
		covered = append(covered, c)
		mu.Unlock()
		return err
	}
	const callers = 32
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			err := Update(db, func(txn *badger.Txn) error {
				return Set(txn, Key(Shares, []byte{byte(i)}), KindShares, i)
			})
			if err != nil {
				t.Error(err)
				return
			}
			mine := committed.Add(1)
			if err := d.Sync(); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.ContainsFunc(covered, func(c int64) bool { return c >= mine }) {
				t.Errorf("caller %d (commit %d) returned before a sync that covers it; syncs covered %v", i, mine, covered)
			}
		})
	}
	wg.Wait()
	if len(covered) > 4 {
		t.Fatalf("%d concurrent durable updates ran %d syncs", callers, len(covered))
	}
	t.Logf("%d concurrent durable updates, %d syncs", callers, len(covered))
	if err := d.Update(func(txn *badger.Txn) error { return Set(txn, Key(Shares, []byte("x")), KindShares, 1) }); err != nil {
		t.Fatal(err)
	}
}

// Commit leaves the sync to Flush: a Flush with nothing committed since
// the last sync runs none, one after a commit runs one, a failed sync is
// reported and tried again by the next Flush.
func TestCommitThenFlush(t *testing.T) {
	db, err := Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d := NewDurable(db)
	var fail atomic.Bool
	d.sync = func() error {
		if fail.Load() {
			return errors.New("disk gone")
		}
		return db.Sync()
	}
	set := func(i int) error {
		return d.Commit(func(txn *badger.Txn) error { return Set(txn, Key(Shares, []byte{byte(i)}), KindShares, i) })
	}
	if err := d.Flush(); err != nil || d.Syncs() != 0 {
		t.Fatalf("flush of nothing: err %v, %d syncs", err, d.Syncs())
	}
	if err := set(1); err != nil {
		t.Fatal(err)
	}
	if d.Syncs() != 0 {
		t.Fatalf("commit synced: %d syncs", d.Syncs())
	}
	if err := d.Flush(); err != nil || d.Syncs() != 1 {
		t.Fatalf("flush after a commit: err %v, %d syncs", err, d.Syncs())
	}
	if err := d.Flush(); err != nil || d.Syncs() != 1 {
		t.Fatalf("second flush: err %v, %d syncs", err, d.Syncs())
	}
	fail.Store(true)
	if err := set(2); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err == nil {
		t.Fatal("a failed sync was not reported")
	}
	fail.Store(false)
	if err := d.Flush(); err != nil || d.Syncs() != 3 {
		t.Fatalf("flush after a failed sync: err %v, %d syncs (want a new one)", err, d.Syncs())
	}
}

// countingStringer counts how often it is formatted.
type countingStringer struct{ n *int }

func (c countingStringer) String() string { *c.n++; return "formatted" }

// TestBadgerLogsOnlyEnabledLevels checks that badger's log lines below the
// logger's level are not even formatted: badger writes a debug line for
// every batch of writes.
func TestBadgerLogsOnlyEnabledLevels(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	formatted := 0
	l := slogger{log}
	l.Debugf("writing %v", countingStringer{&formatted})
	if formatted != 0 || buf.Len() != 0 {
		t.Fatalf("a debug line below the level: formatted %d times, logged %q", formatted, buf.String())
	}
	l.Infof("opened %v", countingStringer{&formatted})
	l.Warningf("slow %v", countingStringer{&formatted})
	l.Errorf("failed %v", countingStringer{&formatted})
	if formatted != 3 || strings.Count(buf.String(), "formatted") != 3 || !strings.Contains(buf.String(), "component=badger") {
		t.Fatalf("lines at or above the level: formatted %d times, logged %q", formatted, buf.String())
	}
}
