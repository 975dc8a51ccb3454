package collect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// DefaultGrace is how long, by default, no live row of a group must
// reference a blob before the group's shares of it dissolve.
const DefaultGrace = 24 * time.Hour

// Config configures a Collector. Zero fields take the documented
// defaults.
type Config struct {
	// Grace is how long no live row of a group must reference a blob,
	// while this node is up, before it is collected (default
	// DefaultGrace); negative turns collection off. A row that references
	// the blob again within the grace keeps it.
	Grace time.Duration
	// PassBatch is about how many blobs a pass looks at together
	// (default 4,096): it bounds what a pass holds at once.
	PassBatch int
	// Period is the time between passes (default an eighth of the grace,
	// between 50 ms and 10 minutes).
	Period time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.Period < 0 {
		return fmt.Errorf("collect: negative period %v", c.Period)
	}
	if c.PassBatch < 0 {
		return fmt.Errorf("collect: a batch of %d blobs", c.PassBatch)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.Period == 0 {
		c.Period = min(max(c.Grace/8, 50*time.Millisecond), 10*time.Minute)
	}
	if c.PassBatch == 0 {
		c.PassBatch = 4096
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// rowsPage is how many rows a pass reads at a time.
const rowsPage = 4096

// Groups are this node's groups as a pass reads them. Their rows and
// members change only with a commit to Deps.DB (see Run).
type Groups interface {
	Groups() []syncnode.GroupID
	// RowsFrom returns up to limit live rows of g under prefix from key
	// start on, sorted by key, and the key the next page starts at (""
	// after the last).
	RowsFrom(g syncnode.GroupID, prefix, start string, limit int) ([]syncgroup.Row, string, error)
	Members(g syncnode.GroupID) []syncgroup.Member
}

// Ledger is this node's share ledger.
type Ledger interface {
	// ScanRange calls fn with each blob whose hash begins with a byte
	// from lo up to hi (exclusive) that this node has shares of (or has
	// in escrow).
	ScanRange(lo, hi int, fn func(ref syncnode.BlobRef, shares map[syncnode.GroupID]int) error) error
	// Collect dissolves this node's shares of ref in g (see
	// ownership.Ledger.Collect).
	Collect(ref syncnode.BlobRef, g syncnode.GroupID, also func(*badger.Txn) error) error
	// MayEvict reports no shares of ref here, none in escrow.
	MayEvict(ref syncnode.BlobRef) (bool, error)
}

// Custody keeps this node's copies.
type Custody interface {
	// Lock takes ref's lock, which accepting and granting shares take too.
	Lock(ref syncnode.BlobRef) (unlock func())
	// Pinned reports work in progress that needs the copy.
	Pinned(ref syncnode.BlobRef) bool
	UserPinned(ref syncnode.BlobRef) (bool, time.Time)
	// Delete deletes the copy (syncnode.ErrNotFound if there is none);
	// the caller holds the lock.
	Delete(ref syncnode.BlobRef) error
	// DropPartial discards what a fetch of ref left to resume.
	DropPartial(ref syncnode.BlobRef) error
}

// Deps are what a Collector works with.
type Deps struct {
	Self      peer.ID
	DB        *badger.DB
	Groups    Groups
	Signposts *signpost.Store
	Ledger    Ledger
	Custody   Custody
	// Busy reports a fetch of ref in flight.
	Busy func(ref syncnode.BlobRef) bool
	// Collected, if not nil, is told of each blob collected in a group,
	// and whether its copy here was deleted.
	Collected func(ref syncnode.BlobRef, g syncnode.GroupID, deleted bool)
	// Revive, if not nil, is told of a blob a group collected and a row
	// then named again (see handoff.Handoffs.Revive); it reports whether
	// this node holds it, and if not is told again when a copy arrives.
	Revive func(ref syncnode.BlobRef, groups []syncnode.GroupID) (held bool, err error)
	Log    *slog.Logger
}

// Collector runs the passes.
type Collector struct {
	cfg    Config
	d      Deps
	opened time.Time

	mu    sync.Mutex
	heard map[syncnode.GroupID]time.Time
	// watched is, per blob and group, when this node found the blob
	// unreferenced, by its clock with a monotonic reading (see
	// Facts.Watched); absent, it is when the node opened.
	watched map[watch]time.Time

	collected, deleted, passes, waiting atomic.Int64
	// quietAt is the database's version when the last quiet pass began
	// (see Run), 0 when the last pass was not quiet; quietGroups are the
	// groups it read. Run's goroutine alone touches them.
	quietAt     uint64
	quietGroups []syncnode.GroupID
}

// New returns a collector; opened is now.
func New(cfg Config, d Deps) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	return &Collector{cfg: cfg, d: d, opened: cfg.Now(), heard: map[syncnode.GroupID]time.Time{}, watched: map[watch]time.Time{}}, nil
}

// watch names a blob in a group.
type watch struct {
	ref syncnode.BlobRef
	g   syncnode.GroupID
}

// watchedOf returns Facts.Watched of ref in g; with set, it is now.
func (c *Collector) watchedOf(ref syncnode.BlobRef, g syncnode.GroupID, set bool, now time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := watch{ref, g}
	if set {
		c.watched[k] = now
	}
	if t, ok := c.watched[k]; ok {
		return t
	}
	return c.opened
}

// unwatch forgets when ref was found unreferenced in g.
func (c *Collector) unwatch(ref syncnode.BlobRef, g syncnode.GroupID) {
	c.mu.Lock()
	delete(c.watched, watch{ref, g})
	c.mu.Unlock()
}

// Heard records that a round of g with another member finished now.
func (c *Collector) Heard(g syncnode.GroupID) {
	c.mu.Lock()
	c.heard[g] = c.cfg.Now()
	c.mu.Unlock()
}

// Grace is the grace period; negative when collection is off.
func (c *Collector) Grace() time.Duration { return c.cfg.Grace }

// Stats are the collector's counters.
type Stats struct {
	// Collected counts (blob, group) pairs collected since the node
	// opened, Deleted the copies deleted; Waiting is the pairs found
	// unreferenced by the last pass, whose grace runs.
	Collected, Deleted, Waiting int64
}

// Stats returns the counters now.
func (c *Collector) Stats() Stats {
	return Stats{Collected: c.collected.Load(), Deleted: c.deleted.Load(), Waiting: c.waiting.Load()}
}

// Passes returns how many passes ended since the node opened.
func (c *Collector) Passes() int64 { return c.passes.Load() }

// Run makes a pass every period until ctx ends. A pass is quiet when it
// found no grace running and no copy kept or named again, and changed
// nothing: what it did then depends on the database alone (rows, groups
// and their members, signposts, shares, the blobs' records), so while
// nothing is committed to it and the node's groups are the same, the
// next pass would find the same, and ends at once. An idle node with a
// million rows does not read them all every period.
func (c *Collector) Run(ctx context.Context) {
	if c.cfg.Grace < 0 {
		return
	}
	t := time.NewTicker(c.cfg.Period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.tick(ctx); err != nil && ctx.Err() == nil {
			c.d.Log.Error("collection pass failed", "err", err)
		}
	}
}

// Pass reads every live row of this node's groups, then looks at every
// blob this node knows in a group (by its signpost, its shares or an
// earlier pass): it remembers when one stopped being referenced, forgets
// it when a row references it again, and collects it once the grace has
// run out. It holds the refs the rows name, 32 bytes each in sorted
// lists, and looks at the blobs about 4,096 at a time, by ranges of the
// first byte of their hash: at a million photos, some 32 MB rather than
// several hundred.
func (c *Collector) Pass(ctx context.Context) error {
	_, _, err := c.pass(ctx)
	return err
}

// pass is Pass; it returns, if the pass was quiet (see Run), the
// database's version as it began and the groups it read, else 0.
func (c *Collector) pass(ctx context.Context) (uint64, []syncnode.GroupID, error) {
	if c.cfg.Grace < 0 {
		return 0, nil, nil
	}
	ver := c.version()   // the database as the pass reads it, or later
	start := c.cfg.Now() // rows read from here on
	mine := map[syncnode.GroupID]bool{}
	refs := named{}
	groups := c.d.Groups.Groups()
	for _, g := range groups {
		mine[g] = true
		var found []syncnode.BlobRef
		// A page at a time: a pass holds one page of rows, not them all.
		for start := ""; ; {
			rows, next, err := c.d.Groups.RowsFrom(g, "", start, rowsPage)
			if err != nil {
				return 0, nil, err
			}
			for _, r := range rows {
				rr, _ := syncgroup.FindRefs(r.Value)
				found = append(found, rr...)
			}
			if next == "" {
				break
			}
			start = next
		}
		slices.SortFunc(found, compareRefs)
		refs[g] = slices.Clip(slices.Compact(found))
	}
	ps := &passState{mine: mine, refs: refs, start: start, now: c.cfg.Now(), alone: map[syncnode.GroupID]bool{}}
	var waiting int64
	step := rangeStep(refs, c.cfg.PassBatch)
	for lo := 0; lo < 256; lo += step {
		cands, recs, err := c.candidates(mine, lo, lo+step)
		if err != nil {
			return 0, nil, err
		}
		for _, ref := range slices.SortedFunc(maps.Keys(cands), compareRefs) {
			if err := ctx.Err(); err != nil {
				return 0, nil, err
			}
			n, err := c.blob(ps, ref, cands[ref], recs[ref])
			if err != nil {
				c.d.Log.Warn("blob not collected", "blob", ref, "err", err)
				ps.acted = true
			}
			waiting += int64(n)
		}
	}
	c.waiting.Store(waiting)
	if ps.acted || waiting > 0 {
		ver = 0
	}
	c.passes.Add(1)
	return ver, sortedGroups(groups), nil
}

// tick makes Run's pass: at once, if the last one was quiet, nothing was
// committed since it began, and this node's groups are the ones it read
// (a group joined is in the database before the syncer lists it).
func (c *Collector) tick(ctx context.Context) error {
	if c.quietAt != 0 && c.version() == c.quietAt && slices.Equal(sortedGroups(c.d.Groups.Groups()), c.quietGroups) {
		c.passes.Add(1) // it would find what the last one found
		return nil
	}
	var err error
	c.quietAt, c.quietGroups, err = c.pass(ctx)
	return err
}

func sortedGroups(gs []syncnode.GroupID) []syncnode.GroupID {
	gs = slices.Clone(gs)
	slices.Sort(gs)
	return gs
}

// version returns the version of the database's last commit.
func (c *Collector) version() uint64 {
	txn := c.d.DB.NewTransaction(false)
	defer txn.Discard()
	return txn.ReadTs()
}

// rangeStep is how many first bytes of a hash a pass looks at together:
// about batch blobs at a time, going by the refs the rows name, and all
// 256 in one go for a small node.
func rangeStep(refs named, batch int) int {
	total := 0
	for _, r := range refs {
		total += len(r)
	}
	step := 256
	for step > 1 && total*step/256 > batch {
		step /= 2
	}
	return step
}

// passState is what one pass read, and when.
type passState struct {
	// mine are this node's groups, refs what their live rows name.
	mine map[syncnode.GroupID]bool
	refs named
	// start is when the rows were read, now when the blobs are looked at.
	start, now time.Time
	// alone caches Collector.alone by group.
	alone map[syncnode.GroupID]bool
	// acted reports a blob whose record the pass changed, or that it
	// collected, or whose copy it kept or looked to revive: what the
	// pass did depended on more than the database.
	acted bool
}

// aloneIn reports, once a pass, whether g has no member but this node.
func (c *Collector) aloneIn(ps *passState, g syncnode.GroupID) bool {
	a, ok := ps.alone[g]
	if !ok {
		a = c.alone(g)
		ps.alone[g] = a
	}
	return a
}

// named holds, per group, the refs its live rows name, sorted.
type named map[syncnode.GroupID][]syncnode.BlobRef

// in reports whether a live row of g names ref.
func (n named) in(g syncnode.GroupID, ref syncnode.BlobRef) bool {
	_, ok := slices.BinarySearchFunc(n[g], ref, compareRefs)
	return ok
}

// anywhere reports whether a live row of any group names ref.
func (n named) anywhere(ref syncnode.BlobRef) bool {
	for g := range n {
		if n.in(g, ref) {
			return true
		}
	}
	return false
}

func compareRefs(a, b syncnode.BlobRef) int {
	ha, hb := a.Hash(), b.Hash()
	return bytes.Compare(ha[:], hb[:])
}

// candidates returns the blobs whose hash begins with a byte from lo up
// to hi (exclusive) that this node knows in its groups, with those
// groups, and the records of the range as read then.
func (c *Collector) candidates(mine map[syncnode.GroupID]bool, lo, hi int) (map[syncnode.BlobRef]map[syncnode.GroupID]bool, map[syncnode.BlobRef]*record, error) {
	out := map[syncnode.BlobRef]map[syncnode.GroupID]bool{}
	recs := map[syncnode.BlobRef]*record{}
	add := func(ref syncnode.BlobRef, g syncnode.GroupID) {
		if !mine[g] {
			return
		}
		if out[ref] == nil {
			out[ref] = map[syncnode.GroupID]bool{}
		}
		out[ref][g] = true
	}
	err := c.d.Signposts.ScanGroups(lo, hi, func(ref syncnode.BlobRef, groups []syncnode.GroupID) error {
		for _, g := range groups {
			add(ref, g)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	err = c.d.Ledger.ScanRange(lo, hi, func(ref syncnode.BlobRef, sh map[syncnode.GroupID]int) error {
		for g, n := range sh {
			if n > 0 {
				add(ref, g)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	err = c.d.DB.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: kv.Unref, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(kv.Key(kv.Unref, []byte{byte(lo)})); it.Valid(); it.Next() {
			if k := it.Item().Key(); len(k) > len(kv.Unref) && int(k[len(kv.Unref)]) >= hi {
				break
			}
			var r record
			if err := it.Item().Value(func(v []byte) error { return kv.Decode(kv.KindUnref, v, &r) }); err != nil {
				continue // a damaged record only restarts the grace
			}
			var h [syncnode.HashSize]byte
			copy(h[:], it.Item().Key()[len(kv.Unref):])
			ref := syncnode.RefFromHash(h)
			recs[ref] = &r
			for g := range r.Since {
				add(ref, g)
			}
			if out[ref] == nil && (r.Kept || len(r.Since) > 0) {
				out[ref] = map[syncnode.GroupID]bool{}
			}
		}
		return nil
	})
	return out, recs, err
}

// plan applies to rec what a pass finds of ref in group g (referenced by
// a live row or not), and reports whether the blob is due for collection
// there, and whether rec changed.
func (c *Collector) plan(ps *passState, rec *record, ref syncnode.BlobRef, g syncnode.GroupID) (due, changed bool) {
	referenced, now := ps.refs.in(g, ref), ps.now
	f := Facts{Referenced: referenced, Seen: rec.Seen[g], Opened: c.opened, Heard: c.heardOf(g), Alone: c.aloneIn(ps, g),
		Watched: c.watchedOf(ref, g, false, now)}
	if f.Referenced && !f.Seen {
		if rec.Seen == nil {
			rec.Seen = map[syncnode.GroupID]bool{}
		}
		rec.Seen[g], changed = true, true
	}
	if s, ok := rec.Since[g]; ok {
		f.Since = time.Unix(0, s)
	}
	if _, ok := rec.Collected[g]; ok && f.Referenced {
		delete(rec.Collected, g) // named again: no longer gone
		if rec.Revived == nil {
			rec.Revived = map[syncnode.GroupID]bool{}
		}
		rec.Revived[g], changed = true, true
	}
	switch Plan(f, now, c.cfg.Grace) {
	case Clear:
		delete(rec.Since, g)
		c.unwatch(ref, g)
		changed = true
	case Note:
		if rec.Since == nil {
			rec.Since = map[syncnode.GroupID]int64{}
		}
		rec.Since[g], changed = now.UnixNano(), true
		c.watchedOf(ref, g, true, now)
	case Collect:
		c.unwatch(ref, g)
		due = true
	}
	return due, changed
}

// blob plans and acts for ref in groups gs, and returns in how many the
// grace runs on. read is ref's record as the pass read it (nil: none):
// planned on it first, a blob the pass leaves as it is (most of them)
// costs no transaction; one it changes is planned again on the record
// as it is then.
func (c *Collector) blob(ps *passState, ref syncnode.BlobRef, gs map[syncnode.GroupID]bool, read *record) (int, error) {
	var due []syncnode.GroupID
	groups := slices.Sorted(maps.Keys(gs))
	fn := func(rec *record) bool {
		due = due[:0]
		changed := false
		for g := range rec.Since {
			if !ps.mine[g] { // a group this node left: the grace starts again if it rejoins
				delete(rec.Since, g)
				changed = true
			}
		}
		// Seen stays for a group left: a member that rejoins gets the
		// rows as they are now, not the ones that named the blob while it
		// was out.
		for _, g := range groups {
			d, ch := c.plan(ps, rec, ref, g)
			if d {
				due = append(due, g)
			}
			changed = changed || ch
		}
		return changed
	}
	// fn changes the record only where it reports a change, and its
	// other effects (the watch times) only with one: a plan that changes
	// nothing acted on the read record alone.
	var rec record
	if read != nil {
		rec = *read
	}
	if fn(&rec) || len(due) > 0 {
		ps.acted = true
		var err error
		if rec, err = c.update(ref, fn); err != nil {
			return 0, err
		}
	}
	start, refs, now := ps.start, ps.refs, ps.now
	if len(rec.Revived) > 0 || rec.Kept {
		ps.acted = true // told to Deps.Revive, or kept by pins: not the database's alone
	}
	if err := c.revive(ref, rec); err != nil {
		return 0, err
	}
	anywhere := len(due) > 0 || rec.Kept
	if anywhere {
		anywhere = refs.anywhere(ref)
	}
	for _, g := range due {
		if err := c.collect(ref, g, anywhere, start, now); err != nil {
			return 0, err
		}
	}
	if len(due) == 0 && rec.Kept {
		return 0, c.retry(ref, anywhere, start)
	}
	return len(rec.Since) - len(due), nil
}

// revive tells Deps.Revive of a blob that rec says a group collected and
// named again, and forgets it once this node held it then.
func (c *Collector) revive(ref syncnode.BlobRef, rec record) error {
	if len(rec.Revived) == 0 || c.d.Revive == nil {
		return nil
	}
	held, err := c.d.Revive(ref, slices.Sorted(maps.Keys(rec.Revived)))
	if err != nil || !held {
		return err
	}
	_, err = c.update(ref, func(rec *record) bool {
		changed := len(rec.Revived) > 0
		rec.Revived = nil
		return changed
	})
	return err
}

// retry deletes the copy of a collected blob that something kept, if
// nothing does any more.
func (c *Collector) retry(ref syncnode.BlobRef, anywhere bool, start time.Time) error {
	unlock := c.d.Custody.Lock(ref)
	defer unlock()
	if rec, err := c.load(ref); err != nil || rec.Named >= start.UnixNano() {
		return err // a row named it since the rows were read
	}
	sp, err := c.d.Signposts.Get(ref)
	if err != nil && !errors.Is(err, syncnode.ErrNotFound) {
		return err
	}
	_, err = c.dropCopy(ref, sp, anywhere)
	return err
}

func (c *Collector) heardOf(g syncnode.GroupID) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heard[g]
}

// alone reports a group with no member but this node.
func (c *Collector) alone(g syncnode.GroupID) bool {
	for _, m := range c.d.Groups.Members(g) {
		if m.Peer != c.d.Self {
			return false
		}
	}
	return true
}
