package feed

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/syncgroup"
)

const (
	// readBatch bounds the entries read from the database at a time.
	readBatch = 256
	// pageRows bounds the rows a replay reads from one snapshot.
	pageRows = 256
	// progressEvery is how many entries a watcher skips (other groups'
	// events) before it is handed a Progress event with a fresh marker.
	progressEvery = 4096
)

// Watch returns the events of group g in commit order, from o.From, until
// ctx ends or an error (which it yields last). With g empty it follows
// every group, from o.From or from now, with no replay. It reads the log
// in the caller's goroutine: nothing is buffered for a watcher, so one
// that stops reading costs nothing but its place.
func (l *Log) Watch(ctx context.Context, g syncnode.GroupID, o Options) iter.Seq2[Event, error] {
	if o.Now && o.From == "" {
		// From this call, not from the first pull of the iterator.
		o.From = l.Now(g, o.Prefix)
	}
	return func(yield func(Event, error) bool) {
		w := watch{l: l, g: g, o: o, sc: scope(g, o.Prefix), yield: yield}
		if err := w.run(ctx); err != nil && ctx.Err() == nil {
			yield(Event{}, err)
		}
	}
}

// Check reports whether a watch of g with o would start: a marker that is
// malformed, from another log or scope, or expired is refused.
func (l *Log) Check(g syncnode.GroupID, o Options) error {
	_, err := l.start(g, o)
	return err
}

// start returns the cursor a watch of g with o starts from.
func (l *Log) start(g syncnode.GroupID, o Options) (cursor, error) {
	if o.From == "" {
		if g == "" {
			return cursor{}, fmt.Errorf("%w: a watch of every group starts from a marker or from now", ErrBadMarker)
		}
		return cursor{}, nil
	}
	c, gen, err := parseMarker(o.From, l.id, scope(g, o.Prefix))
	if err != nil {
		return cursor{}, err
	}
	if g == "" && !c.Done {
		return cursor{}, fmt.Errorf("%w: a watch of every group has no replay", ErrBadMarker)
	}
	upTo, ok := l.validUpTo(gen)
	switch {
	case !ok && gen > l.gen:
		return cursor{}, fmt.Errorf("%w: from an opening of the log still to come", ErrBadMarker)
	case !ok:
		return cursor{}, fmt.Errorf("%w (from opening %d of the log, which no longer remembers it)", ErrExpired, gen)
	case gen == l.gen && c.Pos > l.Head():
		return cursor{}, fmt.Errorf("%w: position %d is past the log's end", ErrBadMarker, c.Pos)
	}
	c.clamp(upTo)
	l.mu.Lock()
	first := l.first
	l.mu.Unlock()
	if c.Pos+1 < first {
		return cursor{}, fmt.Errorf("%w (at %d, the log starts at %d)", ErrExpired, c.Pos, first)
	}
	return c, nil
}

// watch is one watcher's state.
type watch struct {
	l     *Log
	g     syncnode.GroupID
	o     Options
	sc    string
	c     cursor
	yield func(Event, error) bool
	// stopped: the consumer stopped the iteration.
	stopped bool
	// skipped counts the entries passed over since the last event.
	skipped int
}

func (w *watch) run(ctx context.Context) error {
	c, err := w.l.start(w.g, w.o)
	if err != nil {
		return err
	}
	w.c = c
	for !w.c.Done && !w.stopped && ctx.Err() == nil {
		if err := w.replayPage(ctx); err != nil {
			return err
		}
	}
	return w.follow(ctx)
}

// emit hands e to the consumer with the cursor's marker.
func (w *watch) emit(e Event) bool {
	e.Marker = w.c.marker(w.l.id, w.l.gen, w.sc)
	w.skipped = 0
	if !w.yield(e, nil) {
		w.stopped = true
	}
	return !w.stopped
}

// ranges are the key prefixes the replay scans, in key order and
// disjoint: the membership rows and the watch's prefix.
func (w *watch) ranges() []string {
	m, p := syncgroup.MembershipPrefix, w.o.Prefix
	switch {
	case strings.HasPrefix(m, p):
		return []string{p}
	case strings.HasPrefix(p, m):
		return []string{m}
	case p < m:
		return []string{p, m}
	}
	return []string{m, p}
}

// replayPage delivers what changed since the cursor's position for the
// keys already replayed, then the next page of the group's current rows,
// read from one short snapshot, and CaughtUp after the last. No snapshot
// stays open while the consumer runs.
func (w *watch) replayPage(ctx context.Context) error {
	base, rows, more, err := w.l.page(w.g, w.ranges(), w.c, pageRows)
	if err != nil {
		return err
	}
	if w.c.Begun {
		// What changed since, for the keys already replayed.
		if err := w.readUpTo(ctx, base); err != nil || w.stopped {
			return err
		}
	}
	w.c.Pos = base
	for _, r := range rows {
		w.c.Upto, w.c.Begun = r.Key, true
		if e, ok := w.rowEvent(r); ok && !r.Deleted {
			e.Initial, e.Time = true, time.Unix(0, r.TS.Wall)
			if !w.emit(e) {
				return nil
			}
		}
	}
	if !more {
		w.c.Done, w.c.Begun, w.c.Upto = true, false, ""
		w.emit(Event{Kind: CaughtUp, Group: w.g, Time: w.l.now()})
	}
	return nil
}

// page reads, from one snapshot holding every entry up to base and no
// other, up to n rows of group g past the cursor's key, in key order
// within ranges; more reports rows left.
func (l *Log) page(g syncnode.GroupID, ranges []string, c cursor, n int) (base uint64, rows []syncgroup.Row, more bool, err error) {
	done, err := l.enter()
	if err != nil {
		return 0, nil, false, err
	}
	defer done()
	// No commit runs between syncing the head and opening the snapshot,
	// and the snapshot holds nothing a power cut could take back.
	l.commit.Lock()
	if err := l.syncLocked(); err != nil {
		l.commit.Unlock()
		return 0, nil, false, err
	}
	base = l.Head()
	txn := l.db.NewTransaction(false)
	l.commit.Unlock()
	defer txn.Discard()
	for _, prefix := range ranges {
		from := prefix
		if c.Begun && c.Upto > from {
			from = c.Upto
		}
		err := syncgroup.ScanRows(txn, g, from, func(r syncgroup.Row) (bool, error) {
			if !strings.HasPrefix(r.Key, prefix) {
				return false, nil
			}
			if c.Begun && r.Key <= c.Upto {
				return true, nil
			}
			if len(rows) == n {
				more = true
				return false, nil
			}
			rows = append(rows, r)
			return true, nil
		})
		if err != nil || more {
			return base, rows, more, err
		}
	}
	return base, rows, false, nil
}

// rowEvent turns row into the event a watcher of its group sees, and
// reports whether the watcher wants it.
func (w *watch) rowEvent(r syncgroup.Row) (Event, bool) {
	e := Event{Group: w.g, Row: r, Key: r.Key, Peer: r.Writer, Local: r.Writer == w.l.self}
	if strings.HasPrefix(r.Key, syncgroup.MembershipPrefix) {
		p, ch := syncgroup.ChangeOf(r)
		switch ch {
		case syncgroup.MemberJoined:
			e.Kind = MemberJoined
		case syncgroup.MemberLeft:
			e.Kind = MemberLeft
		case syncgroup.MemberEjected:
			e.Kind = MemberEjected
		case syncgroup.SpecChanged:
			e.Kind, e.Key = GroupChanged, ""
			return e, true // Peer: the admin that made the change
		default:
			return Event{}, false
		}
		e.Peer = p
		return e, true
	}
	if !strings.HasPrefix(r.Key, w.o.Prefix) {
		return Event{}, false
	}
	e.Kind = RowPut
	if r.Deleted {
		e.Kind = RowDeleted
	}
	return e, true
}

// follow delivers the log's entries after the cursor, waiting for new
// ones at its end.
func (w *watch) follow(ctx context.Context) error {
	for ctx.Err() == nil && !w.stopped {
		w.l.mu.Lock()
		head, wake := w.l.head, w.l.wake
		w.l.mu.Unlock()
		if w.c.Pos >= head {
			select {
			case <-ctx.Done():
			case <-wake:
			}
			continue
		}
		if err := w.readUpTo(ctx, head); err != nil {
			return err
		}
	}
	return nil
}

// readUpTo delivers the entries after the cursor up to end. If ctx ends
// first it returns ctx's error: the caller must hand out nothing more,
// since what follows would carry a position past entries not delivered.
func (w *watch) readUpTo(ctx context.Context, end uint64) error {
	for w.c.Pos < end && !w.stopped {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch, err := w.l.read(w.c.Pos+1, min(end, w.c.Pos+readBatch))
		if err != nil {
			return err
		}
		for _, en := range batch {
			if err := ctx.Err(); err != nil {
				return err
			}
			if w.stopped {
				return nil
			}
			e, ok := w.event(en.rec)
			w.c.Pos = en.pos
			if ok {
				w.emit(e)
			} else if w.skipped++; w.skipped >= progressEvery {
				w.emit(Event{Kind: Progress, Group: w.g, Time: w.l.now()})
			}
		}
	}
	return nil
}

type entry struct {
	pos uint64
	rec record
}

// read returns the entries from..to, which must all be there.
func (l *Log) read(from, to uint64) ([]entry, error) {
	done, err := l.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	l.mu.Lock()
	first := l.first
	l.mu.Unlock()
	if from < first {
		return nil, fmt.Errorf("%w (at %d, the log starts at %d)", ErrExpired, from-1, first)
	}
	var batch []entry
	err = l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: kv.Feed, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		want := from
		for it.Seek(entryKey(want)); it.Valid() && want <= to; it.Next() {
			pos := entryPos(it.Item().Key())
			if pos != want {
				break
			}
			var r record
			if err := it.Item().Value(func(v []byte) error { return kv.Decode(kv.KindEvent, v, &r) }); err != nil {
				// A damaged entry is passed over as an event of no one's,
				// not a wall every watcher stops at.
				r = record{Kind: Damaged}
			}
			batch = append(batch, entry{pos, r})
			want++
		}
		if want <= to {
			// Pruned under the reader's feet.
			return fmt.Errorf("%w (entry %d is gone)", ErrExpired, want)
		}
		return nil
	})
	return batch, err
}

// event turns an entry into the watcher's event, and reports whether the
// watcher wants it.
func (w *watch) event(r record) (Event, bool) {
	all := w.g == ""
	switch {
	case r.Row != nil:
		if !all && (r.Group != w.g || !w.c.wants(r.Row.Key)) {
			return Event{}, false
		}
		save := w.g
		w.g = r.Group
		e, ok := w.rowEvent(*r.Row)
		w.g = save
		e.Time = time.Unix(0, r.Time)
		return e, ok
	case r.Kind == Damaged:
		return Event{Kind: Damaged, Group: w.g}, true
	case r.Kind == GroupRemoved && (all || r.Group == w.g):
		return Event{Kind: GroupRemoved, Group: r.Group, Time: time.Unix(0, r.Time)}, true
	}
	g := r.Group
	switch {
	case all && g == "" && len(r.Groups) > 0:
		g = r.Groups[0]
	case all:
	case r.Group != "" && r.Group != w.g, r.Group == "" && !slices.Contains(r.Groups, w.g):
		// Another group's, or a blob no group of this watch references.
		return Event{}, false
	default:
		g = w.g
	}
	e := Event{Kind: r.Kind, Group: g, Peer: r.Peer, Size: r.Size, Shares: r.Shares, Time: time.Unix(0, r.Time)}
	if ref, err := syncnode.RefFromBytes(r.Ref); err == nil {
		e.Ref = ref
	}
	e.Local = r.Kind == BlobHeld || r.Kind == SharesIn && r.Peer == ""
	return e, true
}
