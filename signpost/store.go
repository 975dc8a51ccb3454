package signpost

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// Store persists signposts in badger under the kv.Signposts table, the
// CacheSize most recently used kept decoded in memory.
type Store struct {
	db    *badger.DB
	cache cache
}

// NewStore returns a Store over an open badger database.
func NewStore(db *badger.DB) *Store { return &Store{db: db, cache: cache{size: CacheSize}} }

func key(ref syncnode.BlobRef) []byte {
	h := ref.Hash()
	return kv.Key(kv.Signposts, h[:])
}

func get(txn *badger.Txn, ref syncnode.BlobRef) (Signpost, error) {
	var d disk
	if err := kv.Get(txn, key(ref), kv.KindSignpost, &d); errors.Is(err, syncnode.ErrNotFound) {
		return Signpost{}, missing{ref}
	} else if err != nil {
		return Signpost{}, fmt.Errorf("signpost %s: %w", ref, err)
	}
	return d.signpost()
}

// missing is get's error for a blob with no signpost, matching
// syncnode.ErrNotFound. Most reads that miss expect to (a blob first
// heard of): the message is formatted only if someone reads it.
type missing struct{ ref syncnode.BlobRef }

func (e missing) Error() string { return fmt.Sprintf("signpost %s: %v", e.ref, syncnode.ErrNotFound) }

func (e missing) Unwrap() error { return syncnode.ErrNotFound }

// Get returns the signpost of ref; a missing one gives an error wrapping
// syncnode.ErrNotFound.
func (s *Store) Get(ref syncnode.BlobRef) (Signpost, error) {
	if sp, ok := s.cache.get(ref); ok {
		return sp, nil
	}
	defer s.cache.lock(ref)()
	var sp Signpost
	err := s.db.View(func(txn *badger.Txn) (err error) {
		sp, err = get(txn, ref)
		return err
	})
	if err == nil {
		s.cache.put(ref, sp)
	}
	return sp, err
}

// GetAll is Get for many refs, those not cached read in one transaction:
// sps[i] is refs[i]'s signpost where ok[i] (not where there is none, nor
// where its record no longer decodes).
func (s *Store) GetAll(refs []syncnode.BlobRef) (sps []Signpost, ok []bool, err error) {
	sps, ok = make([]Signpost, len(refs)), make([]bool, len(refs))
	var miss []int
	for i, ref := range refs {
		if sps[i], ok[i] = s.cache.get(ref); !ok[i] {
			miss = append(miss, i)
		}
	}
	if len(miss) == 0 {
		return sps, ok, nil
	}
	missed := make([]syncnode.BlobRef, len(miss))
	for j, i := range miss {
		missed[j] = refs[i]
	}
	defer s.cache.lockAll(missed)()
	err = s.db.View(func(txn *badger.Txn) error {
		for _, i := range miss {
			sp, err := get(txn, refs[i])
			if errors.Is(err, syncnode.ErrNotFound) || errors.Is(err, syncnode.ErrCorruptRecord) {
				continue // a record that does not decode costs its ref alone
			}
			if err != nil {
				return err
			}
			sps[i], ok[i] = sp, true
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, i := range miss {
		if ok[i] {
			s.cache.put(refs[i], sps[i])
		}
	}
	return sps, ok, nil
}

// Put replaces the signpost of ref.
func (s *Store) Put(ref syncnode.BlobRef, sp Signpost) error {
	defer s.cache.lock(ref)()
	err := kv.Update(s.db, func(txn *badger.Txn) error {
		return kv.Set(txn, key(ref), kv.KindSignpost, sp.toDisk())
	})
	if err == nil {
		s.cache.put(ref, sp)
	}
	return err
}

// Update atomically reads the signpost of ref (empty if there is none),
// applies fn and writes the result back.
func (s *Store) Update(ref syncnode.BlobRef, fn func(*Signpost)) (Signpost, error) {
	defer s.cache.lock(ref)()
	var sp Signpost
	err := kv.Update(s.db, func(txn *badger.Txn) error {
		var err error
		if cached, ok := s.cache.get(ref); ok {
			sp = cached
		} else if sp, err = get(txn, ref); err != nil && !errors.Is(err, syncnode.ErrNotFound) {
			return err
		}
		fn(&sp)
		return kv.Set(txn, key(ref), kv.KindSignpost, sp.toDisk())
	})
	if err != nil {
		return sp, err
	}
	s.cache.put(ref, sp)
	return sp.clone(), nil
}

// updateChunk bounds the signposts one transaction of UpdateAll writes.
const updateChunk = 256

// UpdateAll is Update for many refs, in a few transactions: fn changes
// the signpost of refs[i] (empty if there is none, or if its record no
// longer decodes). It returns the results in the order of refs; a ref
// given twice is changed twice, in order.
func (s *Store) UpdateAll(refs []syncnode.BlobRef, fn func(i int, sp *Signpost)) ([]Signpost, error) {
	out := make([]Signpost, len(refs))
	for lo := 0; lo < len(refs); lo += updateChunk {
		hi := min(len(refs), lo+updateChunk)
		if err := s.updateChunk(refs[lo:hi], out[lo:hi], func(i int, sp *Signpost) { fn(lo+i, sp) }); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// updateChunk runs one transaction of UpdateAll, holding the stripe locks
// of refs in ascending order.
func (s *Store) updateChunk(refs []syncnode.BlobRef, out []Signpost, fn func(i int, sp *Signpost)) error {
	defer s.cache.lockAll(refs)()
	err := kv.Update(s.db, func(txn *badger.Txn) error {
		now := map[syncnode.BlobRef]Signpost{} // written in this transaction
		for i, ref := range refs {
			sp, ok := now[ref]
			if !ok {
				var err error
				if cached, hit := s.cache.get(ref); hit {
					sp = cached
				} else if sp, err = get(txn, ref); errors.Is(err, syncnode.ErrCorruptRecord) {
					// A signpost is a hint: one that no longer decodes
					// is written anew, not left to fail the batch.
					sp = Signpost{}
				} else if err != nil && !errors.Is(err, syncnode.ErrNotFound) {
					return err
				}
			}
			fn(i, &sp)
			if err := kv.Set(txn, key(ref), kv.KindSignpost, sp.toDisk()); err != nil {
				return err
			}
			now[ref] = sp.clone()
			out[i] = sp
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, ref := range refs {
		s.cache.put(ref, out[i])
	}
	return nil
}

// Merge folds o into the stored signpost of ref and returns the result.
func (s *Store) Merge(ref syncnode.BlobRef, o Signpost) (Signpost, error) {
	return s.Update(ref, func(sp *Signpost) { sp.Merge(o) })
}

// LegacyAttempts returns the fetch attempt count an older version kept in
// ref's signpost (0 if none): the fetcher's journal takes it over.
func (s *Store) LegacyAttempts(ref syncnode.BlobRef) (int, error) {
	sp, err := s.Get(ref)
	if errors.Is(err, syncnode.ErrNotFound) {
		return 0, nil
	}
	return int(sp.legacyAttempts), err
}

// Scan calls fn for every stored signpost until fn fails. A record that
// cannot be decoded stops the scan with an error naming its key.
func (s *Store) Scan(fn func(syncnode.BlobRef, Signpost) error) error {
	return s.scan(0, 256, fn)
}

// ScanGroups calls fn with the groups of each stored signpost of a blob
// whose hash begins with a byte from lo up to hi (exclusive, at most
// 256), read without its locations, until fn fails: a pass that goes a
// range at a time holds what it reads of that range only. A record that
// cannot be decoded stops the scan with an error naming its key.
func (s *Store) ScanGroups(lo, hi int, fn func(syncnode.BlobRef, []syncnode.GroupID) error) error {
	return scanRange(s, lo, hi, decodeGroups, fn)
}

// decodeGroups decodes the groups of a stored signpost.
func decodeGroups(b []byte) ([]syncnode.GroupID, error) {
	var d struct {
		Groups []string `msgpack:"g"`
	}
	if err := kv.Decode(kv.KindSignpost, b, &d); err != nil {
		return nil, err
	}
	if len(d.Groups) > MaxGroups {
		return nil, fmt.Errorf("%w: %d groups, at most %d", ErrInvalid, len(d.Groups), MaxGroups)
	}
	groups := make([]syncnode.GroupID, 0, len(d.Groups))
	for _, g := range d.Groups {
		if g == "" || len(g) > MaxGroupIDLen {
			return nil, fmt.Errorf("%w: group ID of %d bytes", ErrInvalid, len(g))
		}
		groups = append(groups, syncnode.GroupID(g))
	}
	return groups, nil
}

// decodeSignpost decodes a stored signpost.
func decodeSignpost(b []byte) (Signpost, error) {
	var d disk
	if err := kv.Decode(kv.KindSignpost, b, &d); err != nil {
		return Signpost{}, err
	}
	return d.signpost()
}

// scan is Scan of the signposts whose hash begins with a byte in [lo, hi).
func (s *Store) scan(lo, hi int, fn func(syncnode.BlobRef, Signpost) error) error {
	return scanRange(s, lo, hi, decodeSignpost, fn)
}

// scanRange calls fn with what decode reads of each stored signpost whose
// hash begins with a byte in [lo, hi), until fn fails; a record decode
// fails on stops the scan with an error naming its key.
func scanRange[T any](s *Store, lo, hi int, decode func([]byte) (T, error), fn func(syncnode.BlobRef, T) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = kv.Signposts
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Seek(kv.Key(kv.Signposts, []byte{byte(lo)})); it.Valid(); it.Next() {
			item := it.Item()
			if k := item.Key(); len(k) > len(kv.Signposts) && int(k[len(kv.Signposts)]) >= hi {
				break
			}
			ref, err := syncnode.RefFromBytes(item.Key()[len(kv.Signposts):])
			if err != nil {
				return fmt.Errorf("signpost key %x: %w", item.Key(), err)
			}
			var v T
			err = item.Value(func(b []byte) (err error) {
				v, err = decode(b)
				return err
			})
			if err != nil {
				return fmt.Errorf("signpost %s: %w", ref, err)
			}
			if err := fn(ref, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// encodeDisk encodes the stored form of a signpost.
func encodeDisk(d disk) ([]byte, error) { return kv.Encode(kv.KindSignpost, d) }
