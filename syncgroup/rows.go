package syncgroup

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/value"
)

// Row is one version of a key: a msgpack value, or a tombstone.
type Row struct {
	Key     string    `msgpack:"k"`
	Value   []byte    `msgpack:"v,omitempty"`
	Deleted bool      `msgpack:"d,omitempty"`
	TS      Timestamp `msgpack:"t"`
	// Writer wrote this version; Seq is its position in the writer's
	// sequence of writes.
	Writer peer.ID `msgpack:"w"`
	Seq    uint64  `msgpack:"s"`
	// Sig is the writer's signature over the row in its group (SignRow);
	// every receiver verifies it before applying or relaying the row.
	Sig []byte `msgpack:"g,omitempty"`
	// PubKey is the writer's public key, for key types that a peer ID does
	// not embed; it must hash to Writer.
	PubKey []byte `msgpack:"pk,omitempty"`
}

// Wins reports whether a beats b for the same key: last writer wins, by
// timestamp, then by writer ID.
func Wins(a, b Row) bool {
	if c := a.TS.Compare(b.TS); c != 0 {
		return c > 0
	}
	return a.Writer > b.Writer
}

// VersionVector records, per writer, the highest sequence number whose
// writes (or later ones that supersede them) are known.
type VersionVector map[peer.ID]uint64

// Knows reports whether v covers writer's write seq.
func (v VersionVector) Knows(writer peer.ID, seq uint64) bool { return v[writer] >= seq }

// Merge raises v to at least o, entry by entry.
func (v VersionVector) Merge(o VersionVector) {
	for p, n := range o {
		if n > v[p] {
			v[p] = n
		}
	}
}

// FindRefs returns the distinct blob refs inside a msgpack value, in
// order, without knowing its schema: they are the extension values of type
// syncnode.MsgpackExt. It is value.Refs, with malformed bytes reported as
// syncnode.ErrCorruptRecord.
func FindRefs(v []byte) ([]syncnode.BlobRef, error) {
	refs, err := value.Refs(v)
	if errors.Is(err, value.ErrMalformed) {
		return nil, fmt.Errorf("%w: %w", syncnode.ErrCorruptRecord, err)
	}
	return refs, err
}

// Rows is one device's replica of a syncgroup's rows: the winning version
// of every key, a version vector and the device's own write sequence. It is
// pure state: no clock of its own, no I/O.
type Rows struct {
	self peer.ID
	// sign, if set, signs every row this device writes.
	sign func(*Row)
	hlc  HLC
	seq  uint64
	// rows holds each key's winning version, in key order (never
	// shrinking, as it keeps tombstones): a list or a page reads only the
	// keys it returns. A data row's value and signature stay in memory
	// only until the store holds them (see entry).
	rows keyIndex
	// load reads rows back from the store by key; nil until a store
	// saved this replica, and then nothing is dropped from memory.
	load func(keys []string) ([]Row, error)
	vv   VersionVector
	// seen is, per writer, the highest sequence number of a row of its
	// that this replica has held (verified, as every row it applies is):
	// how far a peer's claimed vector may raise vv. Only the writer's
	// signature vouches for a sequence number.
	seen VersionVector
	// memberGen counts changes to the membership rows, for the group's
	// cache of its members.
	memberGen uint64
	// govGen counts changes to the chain and to the admission rows of
	// groups from before it, for the group's cache of its chain.
	govGen uint64
	// lastGov is the key of the last such row set.
	lastGov string
	// memberKeys indexes the keys under the membership prefix: few, and
	// read often (membership, the chain) among many data rows.
	memberKeys map[string]struct{}
	// usage is what each writer's winning rows cost this replica; the
	// budget (base, groupBudget) bounds it.
	usage map[peer.ID]Usage
	// writers holds one copy of each writer's ID, which its rows share.
	writers map[peer.ID]peer.ID
	// base bounds each writer's rows where the group's budget
	// (groupBudget, nil for rows of no group) leaves a field zero.
	base        Budget
	groupBudget func() Budget
}

// NewRows returns an empty replica for device self.
func NewRows(self peer.ID, maxSkew time.Duration) *Rows {
	return &Rows{self: self, hlc: HLC{MaxSkew: maxSkew},
		vv: VersionVector{}, seen: VersionVector{}}
}

// write makes a new version of key. Its sequence number follows both this
// replica's own count and what it has learnt of its own writes from peers:
// a device that lost its state (a wiped database, a power cut before a
// sync) and got its rows back never reuses a number, which peers would
// take for a write they already have.
func (r *Rows) write(key string, value []byte, deleted bool, now time.Time) Row {
	r.seq = max(r.seq, r.vv[r.self]) + 1
	row := Row{Key: key, Value: value, Deleted: deleted, TS: r.hlc.Now(now), Writer: r.self, Seq: r.seq}
	if r.sign != nil {
		r.sign(&row)
	}
	r.set(row)
	// The vector claims, for this device too, only rows held here: one
	// that resumed past rows of an earlier membership it does not hold
	// (see Resume) must not vouch for them, or a peer would take them for
	// known and never send them on. They come back from peers, and the
	// entry catches up.
	if r.seq == r.vv[r.self]+1 {
		r.vv[r.self] = r.seq
	}
	r.saw(row)
	return row
}

// saw notes row's sequence number as vouched for by its writer.
func (r *Rows) saw(row Row) {
	if row.Seq > r.seen[row.Writer] {
		r.seen[row.Writer] = row.Seq
	}
}

// Put writes value at key and returns the new version.
func (r *Rows) Put(key string, value []byte, now time.Time) Row {
	return r.write(key, value, false, now)
}

// Delete writes a tombstone at key and returns it.
func (r *Rows) Delete(key string, now time.Time) Row { return r.write(key, nil, true, now) }

// Get returns the winning version of key (possibly a tombstone); ok is
// false, too, if the store cannot give it back (Lookup says why).
func (r *Rows) Get(key string) (Row, bool) {
	row, ok, err := r.Lookup(key)
	return row, ok && err == nil
}

// List returns the live rows under prefix, sorted by key. Rows the store
// cannot give back are left out: ListFrom reports why.
func (r *Rows) List(prefix string) []Row {
	var out []Row
	if strings.HasPrefix(prefix, memberPrefix) {
		for k := range r.memberKeys {
			if e, _ := r.get(k); strings.HasPrefix(k, prefix) && !e.deleted {
				out = append(out, *e.row)
			}
		}
		slices.SortFunc(out, func(a, b Row) int { return strings.Compare(a.Key, b.Key) })
		return out
	}
	out, _, _ = r.ListFrom(prefix, "", -1, nil)
	return out
}

// Apply merges a version from a peer, returning whether it became the
// winner of its key. A version from a clock too far ahead is refused.
// A single pushed write advances the version vector only when it is the
// writer's next one; anti-entropy (Missing, then Learned) closes gaps.
func (r *Rows) Apply(row Row, now time.Time) (bool, error) {
	if err := r.hlc.Observe(row.TS, now); err != nil {
		return false, err
	}
	if row.Seq == r.vv[row.Writer]+1 {
		r.vv[row.Writer] = row.Seq
	}
	r.saw(row)
	if !r.Beats(row) {
		return false, nil
	}
	// Over budget, the row is known (the vector moved past it, so no peer
	// sends it again) and not held. The budget being the group's, every
	// member refuses alike; a member's own writes past it fail.
	if err := r.fits(row); err != nil {
		return false, err
	}
	r.set(row)
	return true, nil
}

// set makes row its key's winner.
func (r *Rows) set(row Row) { r.setWhole(row, true) }

// setWhole is set, holding the row whole in memory only if whole (one
// read back from the store need not be).
func (r *Rows) setWhole(row Row, whole bool) {
	// One copy of each writer's ID, not one per row it wrote.
	if w, ok := r.writers[row.Writer]; ok {
		row.Writer = w
	} else {
		if r.writers == nil {
			r.writers = map[peer.ID]peer.ID{}
		}
		r.writers[row.Writer] = row.Writer
	}
	e := newEntry(row, whole)
	if !strings.HasPrefix(row.Key, memberPrefix) {
		if r.usage == nil {
			r.usage = map[peer.ID]Usage{}
		}
		if cur, ok := r.get(row.Key); ok {
			u := r.usage[cur.writer]
			u.Rows, u.Bytes, u.Refs = u.Rows-1, u.Bytes-int64(cur.cost), u.Refs-int(cur.refs)
			if u.Rows == 0 {
				delete(r.usage, cur.writer)
			} else {
				r.usage[cur.writer] = u
			}
		}
		u := r.usage[row.Writer]
		u.Rows, u.Bytes, u.Refs = u.Rows+1, u.Bytes+int64(e.cost), u.Refs+int(e.refs)
		r.usage[row.Writer] = u
	}
	r.put(row.Key, e)
	if strings.HasPrefix(row.Key, memberPrefix) {
		r.memberGen++
		if r.memberKeys == nil {
			r.memberKeys = map[string]struct{}{}
		}
		r.memberKeys[row.Key] = struct{}{}
		if strings.HasPrefix(row.Key, chainPrefix) || strings.HasPrefix(row.Key, admissionPrefix) {
			r.govGen++
			r.lastGov = row.Key
		}
	}
}

// Known reports whether this replica already holds row's version, by its
// version vector or as the winner of its key: a pushed row seen before
// needs no second check or relay.
func (r *Rows) Known(row Row) bool {
	if r.vv.Knows(row.Writer, row.Seq) {
		return true
	}
	cur, ok := r.get(row.Key)
	return ok && cur.writer == row.Writer && cur.seq == row.Seq
}

// VV returns a copy of the replica's version vector.
func (r *Rows) VV() VersionVector { return maps.Clone(r.vv) }

// Learned raises the version vector after every row a peer sent in answer
// to Missing has been applied: what the peer knew, this replica now knows.
// The peer's vector is its claim, not a fact: an entry raises this
// replica's only as far as a row its writer signed has been seen here, so
// no claim can make this replica take a writer's next writes for ones it
// has (an inflated claim), and writers never seen add nothing.
//
// This device's own entry is the exception, for its next sequence number
// only: a peer that knows more of its writes than it does (it lost its
// state, or its last writes were overwritten before they came back) must
// not see a number reused. A claim there can only waste numbers, never
// suppress a write; it is bounded so that no claim runs the count out.
func (r *Rows) Learned(remote VersionVector) { r.LearnedFor(remote, nil) }

// LearnedFor is Learned for the writers vouch accepts (all of them if
// vouch is nil): a peer's word on what it sent of other writers' rows
// moves this replica's vector only when the caller trusts that word.
func (r *Rows) LearnedFor(remote VersionVector, vouch func(w peer.ID) bool) {
	for w, s := range remote {
		if w == r.self {
			r.seq = max(r.seq, min(s, maxClaimedSeq))
		}
		if vouch != nil && !vouch(w) {
			continue
		}
		if s = min(s, r.seen[w]); s > r.vv[w] {
			r.vv[w] = s
		}
	}
}

// Resume is where one device's writes in a group stand: its last sequence
// number and the newest timestamp its clock gave or saw. It outlives the
// replica (Store.Remove keeps it), so that a device that left or was
// ejected and joins again never reuses a sequence number, which its peers
// would take for a row they hold, nor writes behind its own clock.
type Resume struct {
	Seq uint64    `msgpack:"q"`
	TS  Timestamp `msgpack:"t"`
}

// Max returns the later of r and o, field by field.
func (r Resume) Max(o Resume) Resume {
	if o.TS.Compare(r.TS) > 0 {
		r.TS = o.TS
	}
	r.Seq = max(r.Seq, o.Seq)
	return r
}

// resume returns where this device's writes stand.
func (r *Rows) resume() Resume {
	return Resume{Seq: max(r.seq, r.vv[r.self], r.seen[r.self]), TS: r.hlc.last}
}

// resumeFrom moves this device's sequence and clock past res.
func (r *Rows) resumeFrom(res Resume) {
	r.seq = max(r.seq, res.Seq)
	if res.TS.Compare(r.hlc.last) > 0 {
		r.hlc.last = res.TS
	}
}

// maxClaimedSeq bounds how far a peer's claim can move this device's own
// sequence: far beyond any real count of writes, far below wrapping.
const maxClaimedSeq = 1 << 48
