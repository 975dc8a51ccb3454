// Package journal keeps, for each blob, what a node did about it last:
// the server fetcher's attempt record, the last share hand-off and the
// last fetch that crossed a relay — what why reports.
package journal

import (
	"errors"
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/kv"
)

// Legacy returns an attempt count kept where an older version kept it
// (in the blob's signpost), read when the journal has none.
type Legacy func(ref syncnode.BlobRef) (int, error)

// entry is a blob's journal as stored.
type entry struct {
	LastAttempt int64    `msgpack:"t"` // Unix nanoseconds
	LastErr     string   `msgpack:"e,omitempty"`
	Tried       []string `msgpack:"p,omitempty"` // peers asked, as strings
	Holders     []string `msgpack:"h,omitempty"` // peers found holding it
	Done        bool     `msgpack:"d,omitempty"`
	// Count is the number of the server fetcher's attempts.
	Count int `msgpack:"n,omitempty"`
	// Handoff is the outcome of the blob's last share hand-off, given or
	// taken, at HandoffAt (Unix nanoseconds).
	Handoff   string `msgpack:"o,omitempty"`
	HandoffAt int64  `msgpack:"oa,omitempty"`
	// Route is how the last fetch that met a relay went, at RouteAt
	// (Unix nanoseconds): through which relay, paced or refused.
	Route   string `msgpack:"r,omitempty"`
	RouteAt int64  `msgpack:"ra,omitempty"`
}

// Entry is what the journal holds of one blob.
type Entry struct {
	// Attempt is the server fetcher's record.
	fetcher.Attempt
	// Handoff is the outcome of the last share hand-off, at HandoffAt.
	Handoff   string
	HandoffAt time.Time
	// Route is how the last fetch that met a relay went, at RouteAt.
	Route   string
	RouteAt time.Time
}

// Journal is the journal of one node, in its badger database.
type Journal struct {
	db     *badger.DB
	legacy Legacy
	log    *slog.Logger
}

// New returns the journal kept in db; legacy, if not nil, supplies the
// attempt counts of blobs whose journal has none.
func New(db *badger.DB, legacy Legacy, log *slog.Logger) *Journal {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Journal{db: db, legacy: legacy, log: log}
}

func key(ref syncnode.BlobRef) []byte {
	h := ref.Hash()
	return kv.Key(kv.Journal, h[:])
}

// Attempt implements fetcher.AttemptStore.
func (j *Journal) Attempt(ref syncnode.BlobRef) (fetcher.Attempt, error) {
	e, ok, err := j.read(ref)
	if err != nil {
		return fetcher.Attempt{}, err
	}
	a := e.attempt()
	if (!ok || e.Count == 0) && j.legacy != nil {
		n, err := j.legacy(ref)
		if err != nil && !errors.Is(err, syncnode.ErrNotFound) {
			return a, err
		}
		a.Count = max(a.Count, n)
	}
	return a, nil
}

// SetAttempt implements fetcher.AttemptStore, keeping the notes.
func (j *Journal) SetAttempt(ref syncnode.BlobRef, a fetcher.Attempt) error {
	return j.update(ref, func(e *entry) {
		e.Count, e.LastErr, e.Tried, e.Holders, e.Done = a.Count, a.Err, a.Tried, a.Holders, a.Done
		e.LastAttempt = 0
		if !a.Last.IsZero() {
			e.LastAttempt = a.Last.UnixNano()
		}
	})
}

// NoteHandoff records the outcome of a share hand-off of ref.
func (j *Journal) NoteHandoff(ref syncnode.BlobRef, what string, at time.Time) {
	j.updateOrLog(ref, func(e *entry) { e.Handoff, e.HandoffAt = what, at.UnixNano() })
}

// NoteRoute records how a fetch of ref that met a relay went.
func (j *Journal) NoteRoute(ref syncnode.BlobRef, route string, at time.Time) {
	j.updateOrLog(ref, func(e *entry) { e.Route, e.RouteAt = route, at.UnixNano() })
}

// Read returns ref's journal; false if there is none.
func (j *Journal) Read(ref syncnode.BlobRef) (Entry, bool) {
	e, ok, err := j.read(ref)
	if err != nil || !ok {
		return Entry{}, false
	}
	out := Entry{Attempt: e.attempt(), Handoff: e.Handoff, Route: e.Route}
	if e.HandoffAt != 0 {
		out.HandoffAt = time.Unix(0, e.HandoffAt)
	}
	if e.RouteAt != 0 {
		out.RouteAt = time.Unix(0, e.RouteAt)
	}
	return out, true
}

func (e entry) attempt() fetcher.Attempt {
	a := fetcher.Attempt{Count: e.Count, Err: e.LastErr, Tried: e.Tried, Holders: e.Holders, Done: e.Done}
	if e.LastAttempt != 0 {
		a.Last = time.Unix(0, e.LastAttempt)
	}
	return a
}

func (j *Journal) read(ref syncnode.BlobRef) (entry, bool, error) {
	var e entry
	err := j.db.View(func(txn *badger.Txn) error { return kv.Get(txn, key(ref), kv.KindJournal, &e) })
	if errors.Is(err, syncnode.ErrNotFound) {
		return entry{}, false, nil
	}
	return e, err == nil, err
}

// update applies fn to ref's entry; an unreadable one is written anew.
func (j *Journal) update(ref syncnode.BlobRef, fn func(*entry)) error {
	return kv.Update(j.db, func(txn *badger.Txn) error {
		var e entry
		if err := kv.Get(txn, key(ref), kv.KindJournal, &e); err != nil && !errors.Is(err, syncnode.ErrNotFound) {
			j.log.Warn("fetch journal entry unreadable; written anew", "blob", ref, "err", err)
			e = entry{}
		}
		fn(&e)
		return kv.Set(txn, key(ref), kv.KindJournal, e)
	})
}

func (j *Journal) updateOrLog(ref syncnode.BlobRef, fn func(*entry)) {
	if err := j.update(ref, fn); err != nil {
		j.log.Error("fetch journal not written", "blob", ref, "err", err)
	}
}

var _ fetcher.AttemptStore = (*Journal)(nil)
