// Package kv opens syncnode's embedded badger store with memory-frugal
// options and reads and writes its tagged msgpack records.
//
// Key layout. Every key starts with a two-byte table prefix; the rest is the
// table's own key:
//
//	sp/<32-byte digest>        signpost of a blob (signpost package)
//	sh/<32-byte digest>        ownership shares of a blob, with escrowed offers
//	tx/<16-byte transfer id>   share transfer received (ownership package)
//	fj/<32-byte digest>        fetch journal entry of a blob (fetcher)
//	sg/<group id>              a syncgroup's spec, version vector and this node's priority
//	rw/<group id>\x00<key>     a syncgroup row, the winning version of its key
//	sd/<group id>              where this device's writes stood when it left a group
//	fe/<8-byte position>       an event of the change feed (feed package)
//	fm/                        the change feed's identity
//	up/<32-byte digest>        a blob the user pinned here (custody package)
//	gc/<32-byte digest>        groups whose rows no longer reference a blob (collect package)
//	pk/<32-byte digest>        the pack and place of a packed blob (packindex package)
//	pd/<4-byte pack number>    a pack's dead bytes (packindex package)
//	pm/                        how far the pack index is built (packindex package)
//
// Every value is a Record: one magic byte, one kind byte naming the table,
// one format version byte, a CRC-32C (Castagnoli, big-endian) of the kind,
// the version and the payload, then the msgpack payload. A value of another
// kind or version, a checksum that does not match (a flipped bit on disk)
// or garbled msgpack decodes to an error wrapping syncnode.ErrCorruptRecord,
// never to different data and never a panic.
//
// Writes are not synchronous by default (a power loss may drop the last
// ones, never reorder them); Durable.Update makes a transaction, and every
// one before it, durable before it returns, for records that peers act on
// (I5): the ownership ledger's and the syncgroup rows, and for the user's
// pins, on stable storage before a pin is acknowledged. Concurrent durable
// updates share syncs.
package kv

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/msgpackx"
)

// Table prefixes of the key layout.
var (
	Signposts = []byte("sp/")
	Shares    = []byte("sh/")
	Transfers = []byte("tx/")
	Journal   = []byte("fj/")
	Groups    = []byte("sg/")
	Rows      = []byte("rw/")
	Departed  = []byte("sd/")
	Feed      = []byte("fe/")
	FeedMeta  = []byte("fm/")
	UserPins  = []byte("up/")
	Unref     = []byte("gc/")
	Packed    = []byte("pk/")
	PackDead  = []byte("pd/")
	PackMeta  = []byte("pm/")
	// DHT holds the DHT's records (internal/dhtstore), raw, untagged.
	DHT = []byte("dh/")
)

// Kind tags a record with the table it belongs to.
type Kind byte

// Record kinds, one per table.
const (
	KindSignpost Kind = 's'
	KindShares   Kind = 'h'
	KindTransfer Kind = 't'
	KindJournal  Kind = 'j'
	KindGroup    Kind = 'g'
	KindRow      Kind = 'r'
	KindDeparted Kind = 'd'
	KindEvent    Kind = 'e'
	KindFeedMeta Kind = 'm'
	KindUserPin  Kind = 'u'
	KindUnref    Kind = 'c'
	KindPacked   Kind = 'p'
	KindPackDead Kind = 'x'
	KindPackMeta Kind = 'y'
)

const (
	magic   = 0xA7
	version = 2
	// headerSize is magic, kind, version and the checksum.
	headerSize = 3 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(kind Kind, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, []byte{byte(kind), version})
	return crc32.Update(c, castagnoli, payload)
}

// Frame wraps an encoded msgpack payload as a record of the given kind,
// with its checksum. Encode is Frame of the value's msgpack; fuzzers use
// Frame to reach the payload decoder past the checksum.
func Frame(kind Kind, payload []byte) []byte {
	out := make([]byte, headerSize, headerSize+len(payload))
	out[0], out[1], out[2] = magic, byte(kind), version
	binary.BigEndian.PutUint32(out[3:], checksum(kind, payload))
	return append(out, payload...)
}

// Payload returns the msgpack payload of a record, unchecked, or nil if b
// is too short to be one.
func Payload(b []byte) []byte {
	if len(b) < headerSize {
		return nil
	}
	return b[headerSize:]
}

// Key joins a table prefix and a table key into a fresh slice.
func Key(table []byte, k []byte) []byte {
	out := make([]byte, 0, len(table)+len(k))
	return append(append(out, table...), k...)
}

// Options returns badger options that keep a node's memory small: an 8 MiB
// memtable, small caches and 64 MiB value-log files.
func Options(dir string, log *slog.Logger) badger.Options {
	o := badger.DefaultOptions(dir).
		WithMemTableSize(8 << 20).
		WithValueThreshold(64 << 10).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		WithCompression(options.None).
		WithLoggingLevel(badger.WARNING).
		WithLogger(slogger{log})
	// Tables of 2 MiB at every level: a compaction builds each in memory,
	// and ten of them at once (two compactors, their splits) stay small.
	o.TableSizeMultiplier = 1
	return o
}

// Open opens (creating if needed) the badger store in dir.
func Open(dir string, log *slog.Logger) (*badger.DB, error) {
	db, err := badger.Open(Options(dir, log))
	if err != nil {
		return nil, fmt.Errorf("kv: open %s: %w", dir, err)
	}
	return db, nil
}

// Encode returns v as a record of the given kind.
func Encode(kind Kind, v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("kv: encode %c record: %w", kind, err)
	}
	return Frame(kind, buf.Bytes()), nil
}

// Decode reads a record of the given kind into v.
func Decode(kind Kind, b []byte, v any) error {
	switch {
	case len(b) < headerSize:
		return fmt.Errorf("%w: %d-byte record is too short", syncnode.ErrCorruptRecord, len(b))
	case b[0] != magic:
		return fmt.Errorf("%w: not a syncnode record (first byte 0x%02x)", syncnode.ErrCorruptRecord, b[0])
	case Kind(b[1]) != kind:
		return fmt.Errorf("%w: record of kind %q where %q was expected", syncnode.ErrCorruptRecord, b[1], byte(kind))
	case b[2] != version:
		return fmt.Errorf("%w: %c record of format version %d, this build reads %d", syncnode.ErrCorruptRecord, kind, b[2], version)
	}
	if want, got := binary.BigEndian.Uint32(b[3:]), checksum(kind, b[headerSize:]); want != got {
		return fmt.Errorf("%w: %c record fails its checksum (stored %08x, computed %08x): damaged on disk", syncnode.ErrCorruptRecord, kind, want, got)
	}
	if err := msgpackx.Unmarshal(b[headerSize:], v); err != nil {
		if errors.Is(err, syncnode.ErrCorruptRecord) {
			return err
		}
		return fmt.Errorf("%w: %c record: %v", syncnode.ErrCorruptRecord, kind, err)
	}
	return nil
}

// Get reads the record at key into v. A missing key gives an error wrapping
// syncnode.ErrNotFound.
func Get(txn *badger.Txn, key []byte, kind Kind, v any) error {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return notFound{key}
	}
	if err != nil {
		return fmt.Errorf("kv: get: %w", err)
	}
	return item.Value(func(b []byte) error {
		if err := Decode(kind, b, v); err != nil {
			return fmt.Errorf("key %x: %w", key, err)
		}
		return nil
	})
}

// notFound is Get's error for a key with no record, matching
// syncnode.ErrNotFound. Most reads that miss expect to (a blob with no
// record yet): the message is formatted only if someone reads it.
type notFound struct{ key []byte }

func (e notFound) Error() string { return fmt.Sprintf("kv: %q: %v", e.key, syncnode.ErrNotFound) }

func (e notFound) Unwrap() error { return syncnode.ErrNotFound }

// Set writes v as a record of the given kind at key.
func Set(txn *badger.Txn, key []byte, kind Kind, v any) error {
	b, err := Encode(kind, v)
	if err != nil {
		return err
	}
	return txn.Set(key, b)
}

// Update runs fn in a read-write transaction, retrying it while badger
// reports a conflict with a concurrent transaction, so a read-modify-write
// is atomic.
func Update(db *badger.DB, fn func(txn *badger.Txn) error) error {
	for {
		err := db.Update(fn)
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
}

// Durable runs transactions that must be on stable storage when they
// return. Syncs are group-committed: a caller whose transaction committed
// while a sync was running waits for that sync to end and then joins the
// next one, with every caller that arrived meanwhile, so N concurrent
// callers cost about two syncs of badger's logs, not N.
type Durable struct {
	db *badger.DB
	// sync makes badger's logs durable: db.Sync.
	sync func() error
	mu   sync.Mutex
	cond *sync.Cond
	// started and finished count syncs; running reports one under way;
	// err is the outcome of the last one that finished. dirty is the
	// first sync that covers every transaction of Commit so far.
	started, finished, dirty uint64
	running                  bool
	err                      error
}

// NewDurable returns a Durable over db.
func NewDurable(db *badger.DB) *Durable {
	d := &Durable{db: db, sync: db.Sync}
	d.cond = sync.NewCond(&d.mu)
	return d
}

// Update is Update, then a sync: when it returns, the transaction and
// every one committed before it are on stable storage.
func (d *Durable) Update(fn func(txn *badger.Txn) error) error {
	if err := Update(d.db, fn); err != nil {
		return err
	}
	return d.Sync()
}

// Commit is Update without the sync: the transaction is durable once a
// later Flush or Sync returns. It lets a caller commit under its own lock
// and wait for stable storage after releasing it, sharing the sync with
// every caller that committed meanwhile.
func (d *Durable) Commit(fn func(txn *badger.Txn) error) error {
	if err := Update(d.db, fn); err != nil {
		return err
	}
	d.mu.Lock()
	// A sync already running may have missed this transaction.
	d.dirty = max(d.dirty, d.started+1)
	d.mu.Unlock()
	return nil
}

// Flush returns once every transaction of Commit before the call is on
// stable storage; at once when they all are.
func (d *Durable) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.syncTo(d.dirty)
}

// Sync returns once every transaction committed before the call is on
// stable storage: a sync that started after the call has finished.
func (d *Durable) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	// A sync already running may have missed this caller's writes.
	return d.syncTo(d.started + 1)
}

// syncTo waits until sync number want has finished, running syncs as
// needed. d.mu is held.
func (d *Durable) syncTo(want uint64) error {
	for d.finished < want {
		if d.running {
			d.cond.Wait()
			continue
		}
		d.running = true
		d.started++
		n := d.started
		d.mu.Unlock()
		err := d.sync()
		d.mu.Lock()
		d.running, d.finished, d.err = false, n, err
		if err != nil {
			// What this sync should have covered waits for the next.
			d.dirty = max(d.dirty, n+1)
		}
		d.cond.Broadcast()
	}
	if d.err != nil {
		return fmt.Errorf("kv: sync: %w", d.err)
	}
	return nil
}

// Syncs returns how many syncs of badger's logs have finished.
func (d *Durable) Syncs() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.finished
}

// slogger adapts slog to badger's Logger interface. A message is
// formatted only if its level is enabled: badger logs a debug line for
// every batch of writes, from a fresh goroutine each time, and a call into
// slog's logging grows that goroutine's stack whatever the level.
type slogger struct{ log *slog.Logger }

func (s slogger) Errorf(f string, a ...any)   { s.logf(slog.LevelError, f, a) }
func (s slogger) Warningf(f string, a ...any) { s.logf(slog.LevelWarn, f, a) }
func (s slogger) Infof(f string, a ...any)    { s.logf(slog.LevelInfo, f, a) }
func (s slogger) Debugf(f string, a ...any)   { s.logf(slog.LevelDebug, f, a) }

func (s slogger) logf(level slog.Level, f string, a []any) {
	if !s.log.Enabled(context.Background(), level) {
		return
	}
	s.log.Log(context.Background(), level, fmt.Sprintf(f, a...), "component", "badger")
}
