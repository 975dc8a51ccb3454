// Package custody keeps the copies a node holds: one lock per blob, pins
// for work that needs a copy to stay, the user's pins (kept in the
// database: blobs kept here whatever the budget), least-recently-used
// eviction within a budget, a scrubber that re-verifies every copy, and
// the restore from peers of copies found damaged or missing.
package custody

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/workgroup"
)

// Rules are what the node's shares and groups say of a copy.
type Rules interface {
	// MayEvict reports whether eviction may drop ref: no shares of it
	// here, and a syncgroup references it (a blob no row references
	// exists nowhere else).
	MayEvict(ref syncnode.BlobRef) (bool, error)
	// KeepsAll reports whether this node keeps every copy (it is a
	// server in some group).
	KeepsAll() bool
	// Busy reports whether a fetch of ref is under way.
	Busy(ref syncnode.BlobRef) bool
	// Wanted reports whether ref's copy must come back once lost: shares
	// or a group name it.
	Wanted(ref syncnode.BlobRef) bool
}

// Peers are what custody asks of the node's network.
type Peers interface {
	// Unclaim stops providing ref and naming this node as its holder.
	Unclaim(ref syncnode.BlobRef)
	// Refetch fetches ref's copy from a peer, verified.
	Refetch(ctx context.Context, ref syncnode.BlobRef) error
}

// Scrub defaults: the whole store re-verified every 7 days, reading at most
// 16 MiB/s.
const (
	DefaultScrubPeriod  = 7 * 24 * time.Hour
	DefaultScrubMaxRate = 16 << 20
)

// Config configures a Custody. Zero fields take the documented defaults.
type Config struct {
	// BlobBudget is the most bytes of blobs kept when the node keeps not
	// everything (Rules.KeepsAll): above it, least-recently-used blobs
	// that may be evicted are. 0: no budget.
	BlobBudget int64
	// ScrubPeriod is how often every copy is re-verified (default
	// DefaultScrubPeriod; negative: never).
	ScrubPeriod time.Duration
	// ScrubMaxRate caps the scrubber's reads in bytes per second (default
	// DefaultScrubMaxRate).
	ScrubMaxRate int64
	// RestoreTimeout bounds one try at restoring a copy (default 200 s).
	RestoreTimeout time.Duration
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.BlobBudget < 0 || c.ScrubMaxRate < 0 || c.RestoreTimeout < 0 {
		return errors.New("custody: negative budget, scrub rate or restore timeout")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.ScrubPeriod == 0 {
		c.ScrubPeriod = DefaultScrubPeriod
	}
	if c.ScrubMaxRate == 0 {
		c.ScrubMaxRate = DefaultScrubMaxRate
	}
	if c.RestoreTimeout == 0 {
		c.RestoreTimeout = 200 * time.Second
	}
	return c
}

// Store is the blob store whose copies custody keeps.
type Store interface {
	blobstore.Store
}

// Hooks let a test stop custody between two steps of an operation, to
// run a racing one there. Production code leaves them unset.
type Hooks struct {
	// BeforeDelete runs in eviction after the last check, before the copy
	// is deleted, with the blob's lock held.
	BeforeDelete atomic.Pointer[func(ref syncnode.BlobRef)]
	// EvictPass runs after each eviction pass: whether it listed the
	// store, and how many blobs it checked for pins and shares.
	EvictPass atomic.Pointer[func(listed bool, checked int)]
	// InCommit runs when a fetched blob has been committed (visible, its
	// directory entry synced), with the blob's lock still held.
	InCommit atomic.Pointer[func(ref syncnode.BlobRef)]
}

// Custody keeps one node's copies.
type Custody struct {
	cfg   Config
	log   *slog.Logger
	blobs Store
	rules Rules
	peers Peers
	work  *workgroup.Group
	ctx   context.Context

	locks    blobLocks
	pins     pins
	userPins userPins
	lru      lru
	restore  restorer

	evictMu sync.Mutex
	// evictQueued reports an automatic eviction pass waiting to start.
	evictQueued atomic.Bool

	evictions, damaged, scrubbed, scrubPasses atomic.Int64

	// Hooks are for tests.
	Hooks Hooks
}

// New returns the custody of store's copies, with the user's pins kept in
// db (nil: none can be made); Start runs its background work.
func New(cfg Config, store Store, db *badger.DB, rules Rules, peers Peers, log *slog.Logger) (*Custody, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	work := workgroup.New()
	c := &Custody{cfg: cfg.withDefaults(), log: log, blobs: store, rules: rules, peers: peers, work: work, ctx: work.Context()}
	c.restore.init()
	if db != nil {
		if err := c.userPins.load(db); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Start runs the scrubber and the restorer, which first fetches again
// the user-pinned blobs whose copy is not here.
func (c *Custody) Start() {
	c.restoreUserPinned()
	c.work.Go(c.runScrub)
	c.work.Go(c.runRestore)
}

// Close stops the background work and waits for it.
func (c *Custody) Close() { c.work.Close() }

// Lock locks ref: deleting its copy, and accepting or granting shares of
// it, hold the lock, so that a node never holds shares of a blob whose
// copy it deleted (I3). It returns the unlock.
func (c *Custody) Lock(ref syncnode.BlobRef) (unlock func()) { return c.locks.lock(ref) }

// Pin keeps ref's copy from eviction until unpin: work that needs it
// (a hand-off being taken, shares being taken after a fetch). It is held
// in memory only; the user's pins are UserPin's.
func (c *Custody) Pin(ref syncnode.BlobRef) (unpin func()) { return c.pins.pin(ref) }

// Pinned reports whether work pins ref.
func (c *Custody) Pinned(ref syncnode.BlobRef) bool { return c.pins.pinned(ref) }

// Receive is called as the bytes of ref start to arrive from a peer; mark
// records, durably, that the copy came from a peer (not its origin). It
// runs at once, beside the transfer, and the commit returned waits for it
// before the copy becomes visible. The commit holds the blob's lock, which
// accepting and granting shares take too: no share lands on the copy
// between its becoming visible and its directory entry reaching stable
// storage, where a power loss would leave the shares without the copy.
func (c *Custody) Receive(ref syncnode.BlobRef, mark func() error) (commit func(func() (blobstore.Info, error)) (blobstore.Info, error)) {
	marked := make(chan error, 1)
	go func() { marked <- mark() }()
	return func(commit func() (blobstore.Info, error)) (blobstore.Info, error) {
		if err := <-marked; err != nil {
			return blobstore.Info{}, err
		}
		unlock := c.Lock(ref)
		defer unlock()
		info, err := commit()
		if h := c.Hooks.InCommit.Load(); h != nil && err == nil {
			(*h)(ref)
		}
		return info, err
	}
}

// Touch records that ref, of size bytes, was used at t: it is held and
// may be evicted in least-recently-used order.
func (c *Custody) Touch(ref syncnode.BlobRef, t time.Time, size int64) { c.lru.touch(ref, t, size) }

// Know enters a held blob into the LRU table, last used at t, unless a
// use entered it already: the walk at open does not set back a use made
// since.
func (c *Custody) Know(ref syncnode.BlobRef, t time.Time, size int64) { c.lru.know(ref, t, size) }

// Delete deletes this node's copy of ref and stops claiming it. The
// caller holds ref's lock.
func (c *Custody) Delete(ref syncnode.BlobRef) error {
	if err := c.blobs.Delete(ref); err != nil {
		return err
	}
	c.peers.Unclaim(ref)
	c.lru.forget(ref)
	return nil
}

// DropPartial discards the partial write of ref that a fetch left to
// resume, if the store keeps one: the caller knows the blob is no longer
// wanted here and no fetch of it is under way.
func (c *Custody) DropPartial(ref syncnode.BlobRef) error {
	if d, ok := c.blobs.(blobstore.PartialDropper); ok {
		return d.DropPartial(ref)
	}
	return nil
}

// Stats are custody's running totals.
type Stats struct {
	// Evictions counts blobs evicted over budget.
	Evictions int64
	// Damaged counts copies found damaged (and deleted, to be restored);
	// Scrubbed the bytes the scrubber re-verified in ScrubPasses whole
	// passes; Restoring the blobs whose copy is being restored.
	Damaged, Scrubbed, ScrubPasses int64
	Restoring                      int
}

// Stats returns the totals now.
func (c *Custody) Stats() Stats {
	return Stats{Evictions: c.evictions.Load(), Damaged: c.damaged.Load(), Scrubbed: c.scrubbed.Load(),
		ScrubPasses: c.scrubPasses.Load(), Restoring: len(c.restore.pending())}
}

// HeldRefs returns the blobs this node holds, as the LRU table knows
// them, in no order.
func (c *Custody) HeldRefs() []syncnode.BlobRef {
	return c.lru.refs()
}

// Held returns the blobs this node holds and their bytes, as the LRU
// table knows them (a blob being put or fetched is not in it yet).
func (c *Custody) Held() (blobs int, bytes int64) {
	return c.lru.held()
}
