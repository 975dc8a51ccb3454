// Package dhtstore keeps the DHT's records (the providers of blobs) in the
// node's badger database, under a table of their own, instead of in
// memory: a server providing a million blobs holds their records on disk.
package dhtstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"

	"github.com/syncnode/syncnode/internal/kv"
)

// Store is a go-datastore over a badger database: each datastore key is
// kept under the table prefix kv.DHT. Writes are not synced: the records
// are soft state, provided again after a restart.
type Store struct{ db *badger.DB }

var _ ds.Batching = (*Store)(nil)

// New returns a datastore over db.
func New(db *badger.DB) *Store { return &Store{db: db} }

func dbKey(k ds.Key) []byte { return kv.Key(kv.DHT, k.Bytes()) }

// Get returns the value at key, ds.ErrNotFound if none.
func (s *Store) Get(_ context.Context, key ds.Key) ([]byte, error) {
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(dbKey(key))
		if err != nil {
			return err
		}
		out, err = it.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ds.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("dhtstore: get %s: %w", key, err)
	}
	return out, nil
}

// Has reports whether key has a value.
func (s *Store) Has(ctx context.Context, key ds.Key) (bool, error) {
	_, err := s.GetSize(ctx, key)
	if errors.Is(err, ds.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// GetSize returns the size of key's value, ds.ErrNotFound if none.
func (s *Store) GetSize(_ context.Context, key ds.Key) (int, error) {
	size := -1
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(dbKey(key))
		if err != nil {
			return err
		}
		size = int(it.ValueSize())
		return nil
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return -1, ds.ErrNotFound
	}
	if err != nil {
		return -1, fmt.Errorf("dhtstore: size of %s: %w", key, err)
	}
	return size, nil
}

// Put sets key's value.
func (s *Store) Put(_ context.Context, key ds.Key, value []byte) error {
	return s.update([]op{{key: key, value: value}})
}

// Delete removes key's value; a missing key is no error.
func (s *Store) Delete(_ context.Context, key ds.Key) error {
	return s.update([]op{{key: key, del: true}})
}

type op struct {
	key   ds.Key
	value []byte
	del   bool
}

// maxBatch bounds the operations of one transaction.
const maxBatch = 1024

func (s *Store) update(ops []op) error {
	for len(ops) > 0 {
		n := min(len(ops), maxBatch)
		err := s.db.Update(func(txn *badger.Txn) error {
			// A transaction too big for badger commits what fits.
			return s.apply(txn, ops, &n)
		})
		if err != nil {
			return fmt.Errorf("dhtstore: write: %w", err)
		}
		ops = ops[n:]
	}
	return nil
}

// apply sets or deletes the first *n of ops in txn; if badger finds the
// transaction too big, *n becomes how many it took.
func (s *Store) apply(txn *badger.Txn, ops []op, n *int) error {
	for i, o := range ops[:*n] {
		var err error
		if o.del {
			err = txn.Delete(dbKey(o.key))
		} else {
			err = txn.Set(dbKey(o.key), o.value)
		}
		if errors.Is(err, badger.ErrTxnTooBig) && i > 0 {
			*n = i
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Query returns the entries under q.Prefix, read as the caller iterates
// (one read transaction, open until the results are closed), with q's
// filters, orders, offset and limit applied.
func (s *Store) Query(ctx context.Context, q dsq.Query) (dsq.Results, error) {
	prefix := ds.NewKey(q.Prefix).String()
	if prefix != "/" {
		prefix += "/"
	}
	txn := s.db.NewTransaction(false)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: kv.Key(kv.DHT, []byte(prefix)), PrefetchValues: !q.KeysOnly, PrefetchSize: 64})
	it.Rewind()
	closed := false
	closeAll := func() error {
		if !closed {
			closed = true
			it.Close()
			txn.Discard()
		}
		return nil
	}
	next := func() (dsq.Result, bool) {
		if closed || !it.Valid() {
			return dsq.Result{}, false
		}
		if err := ctx.Err(); err != nil {
			return dsq.Result{Error: err}, true
		}
		item := it.Item()
		e := dsq.Entry{Key: string(item.Key()[len(kv.DHT):]), Size: int(item.ValueSize())}
		if !q.KeysOnly {
			v, err := item.ValueCopy(nil)
			if err != nil {
				return dsq.Result{Error: fmt.Errorf("dhtstore: %s: %w", e.Key, err)}, true
			}
			e.Value = v
		}
		it.Next()
		return dsq.Result{Entry: e}, true
	}
	// The prefix is applied above, on the store's order of keys; what
	// the query adds besides is applied to what the iterator yields.
	rest := q
	rest.Prefix = ""
	return dsq.NaiveQueryApply(rest, dsq.ResultsFromIterator(q, dsq.Iterator{Next: next, Close: closeAll})), nil
}

// Sync is a no-op: the records are soft state.
func (s *Store) Sync(context.Context, ds.Key) error { return nil }

// Close is a no-op: the database is the node's.
func (s *Store) Close() error { return nil }

// Batch returns a batch of writes committed together.
func (s *Store) Batch(context.Context) (ds.Batch, error) { return &batch{s: s}, nil }

type batch struct {
	s   *Store
	ops []op
}

func (b *batch) Put(_ context.Context, key ds.Key, value []byte) error {
	b.ops = append(b.ops, op{key: key, value: value})
	return nil
}

func (b *batch) Delete(_ context.Context, key ds.Key) error {
	b.ops = append(b.ops, op{key: key, del: true})
	return nil
}

func (b *batch) Commit(context.Context) error {
	ops := b.ops
	b.ops = nil
	return b.s.update(ops)
}
