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
	self   peer.ID
	retain uint64
	now    func() time.Time

	// commit is held across each commit, so positions are committed in
	// the order they are handed out.
	commit sync.Mutex

	mu sync.Mutex
	// head is the last position committed; first the oldest kept.
	head, first uint64
	// wake is closed when head moves.
	wake chan struct{}
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
}

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
	l := &Log{db: db, self: self, retain: uint64(cfg.Retain), now: cfg.Now, wake: make(chan struct{})}
	err := kv.Update(db, func(txn *badger.Txn) error {
		var m meta
		err := kv.Get(txn, kv.FeedMeta, kv.KindFeedMeta, &m)
		if errors.Is(err, syncnode.ErrNotFound) {
			var b [8]byte
			rand.Read(b[:])
			m.ID = hex.EncodeToString(b[:])
			err = kv.Set(txn, kv.FeedMeta, kv.KindFeedMeta, m)
		}
		l.id = m.ID
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("feed: open: %w", err)
	}
	err = db.View(func(txn *badger.Txn) error {
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
	return l, nil
}

// ID names this log; markers of another log are refused.
func (l *Log) ID() string { return l.id }

// Head returns the last position committed.
func (l *Log) Head() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.head
}

// Now returns the marker of this instant: a watch from it sees only
// changes made after the call.
func (l *Log) Now() Marker { return cursor{Pos: l.Head(), Done: true}.marker(l.id) }

// Commit calls save with the first of n positions, which save commits,
// and publishes them once it has (syncgroup.Journal).
func (l *Log) Commit(n int, save func(first uint64) error) error {
	l.commit.Lock()
	defer l.commit.Unlock()
	l.mu.Lock()
	first := l.head + 1
	l.mu.Unlock()
	if err := save(first); err != nil {
		return err
	}
	l.publish(first + uint64(n) - 1)
	return nil
}

func (l *Log) publish(head uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.head = head
	close(l.wake)
	l.wake = make(chan struct{})
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
		// Watchers learn the new start before the entries go: one that
		// still finds a gap knows it was pruned (see follow).
		l.mu.Lock()
		l.first = end + 1
		l.mu.Unlock()
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
		first = end + 1
	}
	return nil
}
