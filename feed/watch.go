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

// readBatch bounds the entries read from the database at a time.
const readBatch = 256

// Watch returns the events of group g in commit order, from o.From, until
// ctx ends or an error (which it yields last). It reads the log in the
// caller's goroutine: nothing is buffered for a watcher, so one that
// stops reading costs nothing but its place.
func (l *Log) Watch(ctx context.Context, g syncnode.GroupID, o Options) iter.Seq2[Event, error] {
	if o.Now && o.From == "" {
		// From this call, not from the first pull of the iterator.
		o.From = l.Now()
	}
	return func(yield func(Event, error) bool) {
		w := watch{l: l, g: g, o: o, yield: yield}
		if err := w.run(ctx); err != nil {
			yield(Event{}, err)
		}
	}
}

// watch is one watcher's state.
type watch struct {
	l     *Log
	g     syncnode.GroupID
	o     Options
	c     cursor
	yield func(Event, error) bool
	// stopped: the consumer stopped the iteration.
	stopped bool
}

func (w *watch) run(ctx context.Context) error {
	switch {
	case w.o.From != "":
		c, gen, err := parseMarker(w.o.From, w.l.id)
		if err != nil {
			return err
		}
		upTo, ok := w.l.validUpTo(gen)
		if !ok {
			return fmt.Errorf("%w (from opening %d of the log, which no longer remembers it)", ErrExpired, gen)
		}
		c.clamp(upTo)
		w.c = c
	}
	if !w.c.Done {
		if err := w.replay(ctx); err != nil || w.stopped {
			return err
		}
	}
	return w.follow(ctx)
}

// emit hands e to the consumer with the cursor's marker.
func (w *watch) emit(e Event) bool {
	e.Marker = w.c.marker(w.l.id, w.l.gen)
	if !w.yield(e, nil) {
		w.stopped = true
	}
	return !w.stopped
}

// replay delivers the current state of the keys the cursor has not
// replayed yet, from one snapshot of the database, then CaughtUp.
func (w *watch) replay(ctx context.Context) error {
	// No commit runs between reading the head and opening the snapshot,
	// so the snapshot holds exactly the entries up to base.
	w.l.commit.Lock()
	base := w.l.Head()
	txn := w.l.db.NewTransaction(false)
	w.l.commit.Unlock()
	defer txn.Discard()

	after, started := "", false
	if n := len(w.c.Spans); n > 0 {
		after, started = w.c.Spans[n-1].Upto, true
	}
	// Membership rows sort before every data row (their prefix begins
	// with NUL), so one key order covers both scans.
	for _, prefix := range []string{syncgroup.MembershipPrefix, w.o.Prefix} {
		from := prefix
		if started && after > from {
			from = after
		}
		err := syncgroup.ScanRows(txn, w.g, from, func(r syncgroup.Row) (bool, error) {
			if !strings.HasPrefix(r.Key, prefix) {
				return false, nil
			}
			if started && r.Key <= after {
				return true, nil
			}
			if prefix == w.o.Prefix && strings.HasPrefix(r.Key, syncgroup.MembershipPrefix) {
				return true, nil // the first scan had it
			}
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			e, ok := w.rowEvent(r)
			if !ok || r.Deleted {
				return true, nil
			}
			e.Initial, e.Time = true, time.Unix(0, r.TS.Wall)
			w.c.replayed(base, r.Key)
			return w.emit(e), nil
		})
		if err != nil || w.stopped {
			return err
		}
	}
	w.c.finish(base)
	w.emit(Event{Kind: CaughtUp, Group: w.g, Time: w.l.now()})
	return nil
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
	for ctx.Err() == nil {
		w.l.mu.Lock()
		head, first, wake := w.l.head, w.l.first, w.l.wake
		w.l.mu.Unlock()
		if w.c.Pos+1 < first {
			return fmt.Errorf("%w (at %d, the log starts at %d)", ErrExpired, w.c.Pos, first)
		}
		if w.c.Pos >= head {
			select {
			case <-ctx.Done():
				return nil
			case <-wake:
				continue
			}
		}
		if err := w.readBatch(ctx, min(head, w.c.Pos+readBatch)); err != nil || w.stopped {
			return err
		}
	}
	return nil
}

// readBatch delivers the entries after the cursor up to end.
func (w *watch) readBatch(ctx context.Context, end uint64) error {
	type entry struct {
		pos uint64
		rec record
	}
	var batch []entry
	err := w.l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: kv.Feed, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		want := w.c.Pos + 1
		for it.Seek(entryKey(want)); it.Valid() && want <= end; it.Next() {
			pos := entryPos(it.Item().Key())
			if pos != want {
				// Pruned under the reader's feet.
				return fmt.Errorf("%w (entry %d is gone)", ErrExpired, want)
			}
			var r record
			if err := it.Item().Value(func(v []byte) error { return kv.Decode(kv.KindEvent, v, &r) }); err != nil {
				return fmt.Errorf("feed: entry %d: %w", pos, err)
			}
			batch = append(batch, entry{pos, r})
			want++
		}
		if want <= end {
			return fmt.Errorf("%w (entry %d is gone)", ErrExpired, want)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, en := range batch {
		if ctx.Err() != nil {
			return nil
		}
		e, ok := w.event(en.pos, en.rec)
		w.c.advance(en.pos)
		if ok && !w.emit(e) {
			return nil
		}
	}
	return nil
}

// event turns the entry at pos into the watcher's event, and reports
// whether the watcher wants it.
func (w *watch) event(pos uint64, r record) (Event, bool) {
	if r.Row != nil {
		if r.Group != w.g || !w.c.wants(pos, r.Row.Key) {
			return Event{}, false
		}
		e, ok := w.rowEvent(*r.Row)
		e.Time = time.Unix(0, r.Time)
		return e, ok
	}
	if r.Group != "" && r.Group != w.g || len(r.Groups) > 0 && !slices.Contains(r.Groups, w.g) {
		return Event{}, false
	}
	e := Event{Kind: r.Kind, Group: w.g, Peer: r.Peer, Size: r.Size, Shares: r.Shares, Time: time.Unix(0, r.Time)}
	if ref, err := syncnode.RefFromBytes(r.Ref); err == nil {
		e.Ref = ref
	}
	e.Local = r.Kind == BlobHeld
	return e, true
}
