package feed

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/syncgroup"
)

// DefaultRetain is how many events a log keeps by default.
const DefaultRetain = 1 << 20

// Config configures a Log; its zero value is the defaults.
type Config struct {
	// Retain is how many of the latest events the log keeps (default
	// DefaultRetain); a watcher further behind gets ErrExpired.
	Retain int
	// Now is the clock that stamps events (default time.Now).
	Now func() time.Time
	// Enter, if not nil, is called around each read of the database by a
	// watch: it fails once the database is closing, and done ends the
	// read. A watch holds nothing while its consumer runs.
	Enter func() (done func(), err error)
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.Retain < 0 {
		return errors.New("feed: negative retention")
	}
	return nil
}

// Log is a node's change feed, stored in its badger database.
type Log struct {
	db     *badger.DB
	id     string
	gen    uint64
	opens  []opening
	self   peer.ID
	retain uint64
	now    func() time.Time
	enter  func() (func(), error)

	// commit is held across each commit, so positions are committed in
	// the order they are handed out.
	commit sync.Mutex

	mu sync.Mutex
	// committed is the last position committed; head the last one on
	// stable storage, which watchers read up to (a power cut takes back
	// nothing a watcher saw); first the oldest kept.
	committed, head, first uint64
	// wake is closed when head moves.
	wake chan struct{}
	// unsynced holds a token while entries committed wait for a sync.
	unsynced chan struct{}
}

var _ syncgroup.Journal = (*Log)(nil)

// record is an event as stored.
type record struct {
	Kind   Kind               `msgpack:"k,omitempty"`
	Group  syncnode.GroupID   `msgpack:"g,omitempty"`
	Groups []syncnode.GroupID `msgpack:"gs,omitempty"`
	Row    *syncgroup.Row     `msgpack:"r,omitempty"`
	Peer   peer.ID            `msgpack:"p,omitempty"`
	Ref    []byte             `msgpack:"b,omitempty"`
	Size   int64              `msgpack:"z,omitempty"`
	Shares int                `msgpack:"n,omitempty"`
	Time   int64              `msgpack:"t"`
}

func entryKey(pos uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], pos)
	return kv.Key(kv.Feed, b[:])
}

func entryPos(key []byte) uint64 { return binary.BigEndian.Uint64(key[len(kv.Feed):]) }

type meta struct {
	ID string `msgpack:"i"`
	// Opens lists, for each time the log was opened, where it stood.
	Opens []opening `msgpack:"o,omitempty"`
}

// opening is one opening of the log: its generation and the first
// position it handed out. Entries appended but not yet on stable storage
// when the node lost power are gone at the next opening, which hands
// their positions out again: a marker from an earlier generation is good
// only up to the first position of the generations after it.
type opening struct {
	Gen   uint64 `msgpack:"g"`
	First uint64 `msgpack:"f"`
}

// maxOpenings bounds the openings remembered; a marker from an opening
// forgotten is expired.
const maxOpenings = 1024

// Open returns the log kept in db for the node self, creating it if new.
func Open(db *badger.DB, self peer.ID, cfg Config) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Retain == 0 {
		cfg.Retain = DefaultRetain
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Enter == nil {
		cfg.Enter = func() (func(), error) { return func() {}, nil }
	}
	l := &Log{db: db, self: self, retain: uint64(cfg.Retain), now: cfg.Now, enter: cfg.Enter, wake: make(chan struct{}),
		unsynced: make(chan struct{}, 1)}
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: kv.Feed})
		defer it.Close()
		if it.Rewind(); it.Valid() {
			l.first = entryPos(it.Item().Key())
		}
		rit := txn.NewIterator(badger.IteratorOptions{Prefix: kv.Feed, Reverse: true})
		defer rit.Close()
		if rit.Seek(kv.Key(kv.Feed, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})); rit.Valid() {
			l.head = entryPos(rit.Item().Key())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("feed: open: %w", err)
	}
	if l.first == 0 {
		l.first = l.head + 1
	}
	l.committed = l.head
	err = kv.Update(db, func(txn *badger.Txn) error {
		var m meta
		err := kv.Get(txn, kv.FeedMeta, kv.KindFeedMeta, &m)
		if errors.Is(err, syncnode.ErrNotFound) {
			var b [8]byte
			rand.Read(b[:])
			m, err = meta{ID: hex.EncodeToString(b[:])}, nil
		}
		if err != nil {
			return err
		}
		l.gen = 1
		if k := len(m.Opens); k > 0 {
			l.gen = m.Opens[k-1].Gen + 1
		}
		m.Opens = append(m.Opens, opening{Gen: l.gen, First: l.head + 1})
		if len(m.Opens) > maxOpenings {
			m.Opens = m.Opens[len(m.Opens)-maxOpenings:]
		}
		l.id, l.opens = m.ID, m.Opens
		return kv.Set(txn, kv.FeedMeta, kv.KindFeedMeta, m)
	})
	if err == nil {
		// The opening is on stable storage before any position of it
		// is handed out.
		err = db.Sync()
	}
	if err != nil {
		return nil, fmt.Errorf("feed: open: %w", err)
	}
	return l, nil
}

// ID names this log; markers of another log are refused.
func (l *Log) ID() string { return l.id }

// Head returns the last position on stable storage: what watchers read
// up to.
func (l *Log) Head() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head
}

// Now returns the marker of this instant: a watch from it sees only
// changes made after the call.
func (l *Log) Now(g syncnode.GroupID, prefix string) Marker {
	// What was committed before the call counts as before it: synced
	// first, so the marker's place is one a power cut cannot take back.
	l.Sync()
	return cursor{Pos: l.Head(), Done: true}.marker(l.id, l.gen, scope(g, prefix))
}

// validUpTo returns how far a marker of generation gen is good: the position
// before the first one handed out by any later opening (entries past it
// may have been lost to a power cut, and their positions reused). ok is
// false for a generation the log no longer remembers.
func (l *Log) validUpTo(gen uint64) (upTo uint64, ok bool) {
	if len(l.opens) == 0 || gen < l.opens[0].Gen || gen > l.gen {
		return 0, false
	}
	upTo = ^uint64(0)
	for _, o := range l.opens {
		if o.Gen > gen {
			upTo = min(upTo, o.First-1)
		}
	}
	return upTo, true
}

// Commit calls save with the first of n positions, which save commits,
// and publishes them once it has (syncgroup.Journal).
func (l *Log) Commit(n int, save func(first uint64) error) error {
	l.commit.Lock()
	defer l.commit.Unlock()
	l.mu.Lock()
	first := l.committed + 1
	l.mu.Unlock()
	if err := save(first); err != nil {
		return err
	}
	l.mu.Lock()
	l.committed = first + uint64(n) - 1
	l.mu.Unlock()
	select {
	case l.unsynced <- struct{}{}:
	default:
	}
	return nil
}

// Pending reports entries committed and not yet on stable storage.
func (l *Log) Pending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.committed > l.head
}

// Unsynced receives when entries were committed that no sync may follow
// soon (a save whose writer does not wait for stable storage): the node
// then calls Sync, so that watchers get them within a sync's time.
func (l *Log) Unsynced() <-chan struct{} { return l.unsynced }

// Mark returns the last position committed (syncgroup.Journal): once a
// sync that began after the call ends, Synced(mark) publishes it.
func (l *Log) Mark() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.committed
}

// Synced publishes to watchers every entry up to mark, which is on
// stable storage (syncgroup.Journal).
func (l *Log) Synced(mark uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if mark <= l.head {
		return
	}
	l.head = mark
	close(l.wake)
	l.wake = make(chan struct{})
}

// Sync puts every entry committed on stable storage and publishes it:
// for entries whose save no sync followed (the node calls it often).
func (l *Log) Sync() error {
	l.commit.Lock()
	defer l.commit.Unlock()
	return l.syncLocked()
}

// syncLocked is Sync with the commit lock held.
func (l *Log) syncLocked() error {
	mark := l.Mark()
	if mark <= l.Head() {
		return nil
	}
	if err := l.db.Sync(); err != nil {
		return fmt.Errorf("feed: sync: %w", err)
	}
	l.Synced(mark)
	return nil
}

// Removed records that the replica of g was removed with its rows
// (syncgroup.Journal).
func (l *Log) Removed(g syncnode.GroupID) error {
	return l.append(record{Kind: GroupRemoved, Group: g})
}

// Put writes in txn the entry at pos for row, which now wins its key in
// group g (syncgroup.Journal).
func (l *Log) Put(txn *badger.Txn, pos uint64, g syncnode.GroupID, row syncgroup.Row) error {
	return kv.Set(txn, entryKey(pos), kv.KindEvent, record{Group: g, Row: &row, Time: l.now().UnixNano()})
}

// Blob appends an event about blob ref to the log: kind is BlobHeld,
// BlobFetched, BlobDropped or ServerCopy; groups are those whose rows
// reference the blob (none: every watcher sees it); p the peer
// concerned, if any.
func (l *Log) Blob(kind Kind, ref syncnode.BlobRef, size int64, groups []syncnode.GroupID, p peer.ID) error {
	return l.append(record{Kind: kind, Groups: groups, Ref: ref.Bytes(), Size: size, Peer: p})
}

// Shares appends a SharesIn or SharesOut event: n shares of ref in g
// moved from or to p.
func (l *Log) Shares(kind Kind, ref syncnode.BlobRef, g syncnode.GroupID, n int, p peer.ID) error {
	return l.append(record{Kind: kind, Group: g, Ref: ref.Bytes(), Shares: n, Peer: p})
}

// append commits an event the node reports (a blob's, shares'), which
// watchers get with the next sync of the store, sharing its flush (the
// node syncs within moments, see Unsynced): no sync of its own.
func (l *Log) append(r record) error {
	r.Time = l.now().UnixNano()
	return l.Commit(1, func(pos uint64) error {
		return kv.Update(l.db, func(txn *badger.Txn) error { return kv.Set(txn, entryKey(pos), kv.KindEvent, r) })
	})
}

// pruneBatch bounds the entries Prune deletes in one write batch.
const pruneBatch = 4096

// Prune deletes the entries beyond the log's retention, oldest first.
func (l *Log) Prune() error {
	l.mu.Lock()
	head, first := l.head, l.first
	l.mu.Unlock()
	if head < l.retain || first > head-l.retain {
		return nil
	}
	upto := head - l.retain // delete entries first..upto
	for first <= upto {
		end := min(upto, first+pruneBatch-1)
		wb := l.db.NewWriteBatch()
		for p := first; p <= end; p++ {
			if err := wb.Delete(entryKey(p)); err != nil {
				wb.Cancel()
				return fmt.Errorf("feed: prune: %w", err)
			}
		}
		if err := wb.Flush(); err != nil {
			return fmt.Errorf("feed: prune: %w", err)
		}
		// A watcher reading meanwhile finds a gap, and knows the
		// entries were pruned (see read).
		l.mu.Lock()
		l.first = end + 1
		l.mu.Unlock()
		first = end + 1
	}
	return nil
}
