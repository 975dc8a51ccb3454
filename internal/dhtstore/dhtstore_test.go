package dhtstore

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/dgraph-io/badger/v4"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	dstest "github.com/ipfs/go-datastore/test"

	"github.com/syncnode/syncnode/internal/kv"
)

// TestDatastoreSuite runs go-datastore's own suite against the store
// (gets, puts, deletes, prefixes, orders, limits, filters, sizes,
// batches), beside another table of the node's database, which it never
// sees nor touches.
func TestDatastoreSuite(t *testing.T) {
	db, err := kv.Open(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	other := kv.Key(kv.Signposts, []byte("/neighbour"))
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(other, []byte("kept")) }); err != nil {
		t.Fatal(err)
	}
	s := New(db)
	dstest.SubtestAll(t, s)
	res, err := s.Query(t.Context(), dsq.Query{})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil || len(all) != 0 {
		t.Fatalf("after the suite: %d entries, %v", len(all), err)
	}
	if err := db.View(func(txn *badger.Txn) error { _, err := txn.Get(other); return err }); err != nil {
		t.Fatalf("the neighbouring table: %v", err)
	}
}

// TestBatchTooBigForOneTransaction: a batch larger than badger takes in
// one transaction is committed in several, every write of it kept.
func TestBatchTooBigForOneTransaction(t *testing.T) {
	db, err := kv.Open(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := New(db)
	b, _ := s.Batch(t.Context())
	value := bytes.Repeat([]byte{7}, 32<<10)
	const n = 300 // about 10 MiB
	for i := range n {
		if err := b.Put(t.Context(), ds.NewKey(fmt.Sprintf("/providers/%04d", i)), value); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	res, err := s.Query(t.Context(), dsq.Query{Prefix: "/providers", KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil || len(all) != n {
		t.Fatalf("%d entries after the batch, want %d (%v)", len(all), n, err)
	}
}
