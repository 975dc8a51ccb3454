package node

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/blobproto"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/p2p"
)

// journalEntry is what the server fetcher recorded of its last attempt at
// a blob.
type journalEntry struct {
	LastAttempt int64    `msgpack:"t"` // Unix nanoseconds
	LastErr     string   `msgpack:"e,omitempty"`
	Tried       []string `msgpack:"p,omitempty"` // peers asked, as strings
	Holders     []string `msgpack:"h,omitempty"` // peers found holding it
	Done        bool     `msgpack:"d,omitempty"`
	// Handoff is the outcome of the blob's last share hand-off, given or
	// taken, at HandoffAt (Unix nanoseconds).
	Handoff   string `msgpack:"o,omitempty"`
	HandoffAt int64  `msgpack:"oa,omitempty"`
	// Route is how the last fetch that met a relay went, at RouteAt
	// (Unix nanoseconds): through which relay, paced or refused.
	Route   string `msgpack:"r,omitempty"`
	RouteAt int64  `msgpack:"ra,omitempty"`
}

func journalKey(ref syncnode.BlobRef) []byte {
	h := ref.Hash()
	return kv.Key(kv.Journal, h[:])
}

// writeJournal records the server fetcher's attempt e, keeping the last
// hand-off's outcome.
func (n *Node) writeJournal(ref syncnode.BlobRef, e journalEntry) {
	n.updateJournal(ref, func(old *journalEntry) {
		e.Handoff, e.HandoffAt = old.Handoff, old.HandoffAt
		e.Route, e.RouteAt = old.Route, old.RouteAt
		*old = e
	})
}

// noteRoute records how a fetch of ref that met a relay went: what came
// through which relay, paced or not, or that the setting refused it.
func (n *Node) noteRoute(ref syncnode.BlobRef, res blobproto.FetchResult, err error) {
	var parts []string
	for holder, relay := range res.Relayed {
		how := ""
		switch n.cfg.Relayed {
		case p2p.RelayRefuse:
			how = "refused by setting (relayed: refuse)"
		case p2p.RelayThrottle:
			how = fmt.Sprintf("%d bytes, throttled to %d bytes/s (relayed: throttle)", res.BytesBy[holder], n.cfg.RelayRate)
		default:
			how = fmt.Sprintf("%d bytes, unthrottled (relayed: allow)", res.BytesBy[holder])
		}
		parts = append(parts, fmt.Sprintf("from %s through relay %s: %s", n.peerName(holder), n.peerName(relay), how))
	}
	if len(parts) == 0 {
		return
	}
	slices.Sort(parts)
	route := strings.Join(parts, "; ")
	if err != nil {
		route += " — fetch failed"
	}
	n.updateJournal(ref, func(e *journalEntry) {
		e.Route, e.RouteAt = route, time.Now().UnixNano()
	})
}

// peerName returns p's name and ID, or its ID alone.
func (n *Node) peerName(p peer.ID) string {
	if name := n.NameOf(p); name != "" {
		return name + " (" + p.String() + ")"
	}
	return p.String()
}

// noteHandoff records the outcome of a share hand-off of ref.
func (n *Node) noteHandoff(ref syncnode.BlobRef, what string) {
	n.updateJournal(ref, func(e *journalEntry) {
		e.Handoff, e.HandoffAt = what, time.Now().UnixNano()
	})
}

func (n *Node) updateJournal(ref syncnode.BlobRef, fn func(*journalEntry)) {
	err := kv.Update(n.db, func(txn *badger.Txn) error {
		var e journalEntry
		if err := kv.Get(txn, journalKey(ref), kv.KindJournal, &e); err != nil && !errors.Is(err, syncnode.ErrNotFound) {
			n.log.Warn("fetch journal entry unreadable; written anew", "blob", ref, "err", err)
			e = journalEntry{}
		}
		fn(&e)
		return kv.Set(txn, journalKey(ref), kv.KindJournal, e)
	})
	if err != nil {
		n.log.Error("fetch journal not written", "blob", ref, "err", err)
	}
}

func (n *Node) readJournal(ref syncnode.BlobRef) (journalEntry, bool) {
	var e journalEntry
	err := n.db.View(func(txn *badger.Txn) error { return kv.Get(txn, journalKey(ref), kv.KindJournal, &e) })
	return e, err == nil
}

// Why explains a blob's state on this node: held or not, who has it, what
// the server fetcher has tried and when it tries next.
type Why struct {
	Ref  syncnode.BlobRef
	Held bool
	Size int64
	// Shares are this node's ownership shares by group.
	Shares map[syncnode.GroupID]int
	// Groups are the syncgroups the blob was learned through; ServerIn
	// reports whether this node is a server in one of them (and so fetches
	// it in the background).
	Groups   []syncnode.GroupID
	ServerIn bool
	// Locations are where the blob probably is, best first.
	Locations []WhyLocation
	// Queued and Running describe the server fetcher's state; Attempts is
	// the persisted count of failed attempts; NextAttempt is when the
	// next one is due.
	Queued, Running bool
	Attempts        int
	NextAttempt     time.Time
	// LastAttempt, LastErr, Tried and Holders come from the fetch journal.
	LastAttempt time.Time
	LastErr     string
	Tried       []string
	Holders     []string
	// Restoring reports that this node's copy was lost or found damaged
	// and is being fetched again from a peer.
	Restoring bool
	// Handoff is the outcome of the last share hand-off of the blob, given
	// or taken, at HandoffAt.
	Handoff   string
	HandoffAt time.Time
	// Route is how the last fetch that met a relay went, at RouteAt.
	Route   string
	RouteAt time.Time
}

// WhyLocation is one signpost location.
type WhyLocation struct {
	Peer string
	// Name is the name the peer gave itself in a shared group, if any.
	Name     string
	WhenSeen time.Time
	Server   bool
	Proxy    bool
	Addrs    []string
}

// Why returns what this node knows of ref.
func (n *Node) Why(ref syncnode.BlobRef) (Why, error) {
	w := Why{Ref: ref}
	if info, err := n.blobs.Stat(ref); err == nil {
		w.Held, w.Size = true, info.Size
	}
	var err error
	if w.Shares, err = n.ledger.Shares(ref); err != nil {
		return w, err
	}
	sp, err := n.signposts.Get(ref)
	if err != nil && !errors.Is(err, syncnode.ErrNotFound) {
		return w, err
	}
	w.Groups = sp.Groups()
	w.ServerIn = n.book.IsServerIn(w.Groups)
	for _, l := range sp.Ranked() {
		loc := sp.Locations[l.Peer]
		w.Locations = append(w.Locations, WhyLocation{Peer: l.Peer.String(), Name: n.NameOf(l.Peer), WhenSeen: loc.WhenSeen,
			Server: loc.IsServer, Proxy: loc.IsProxy, Addrs: loc.Addrs})
	}
	w.Restoring = slices.Contains(n.custody.Restoring(), ref)
	st := n.fetcher.Status(ref)
	w.Queued, w.Running, w.NextAttempt = st.Queued, st.Running, st.NextAttempt
	w.Attempts = int(sp.FetchAttempts)
	if e, ok := n.readJournal(ref); ok {
		if e.LastAttempt != 0 {
			w.LastAttempt = time.Unix(0, e.LastAttempt)
		}
		w.LastErr, w.Tried, w.Holders = e.LastErr, e.Tried, e.Holders
		if e.HandoffAt != 0 {
			w.Handoff, w.HandoffAt = e.Handoff, time.Unix(0, e.HandoffAt)
		}
		if e.RouteAt != 0 {
			w.Route, w.RouteAt = e.Route, time.Unix(0, e.RouteAt)
		}
	}
	return w, nil
}

func peerStrings(ps []peer.ID) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// FetchQueue explains up to max blobs in the server fetcher's hands, those
// being fetched first, then the queue soonest first: each with its
// persisted attempt count, next attempt and journal.
func (n *Node) FetchQueue(max int) ([]Why, error) {
	var out []Why
	for _, ref := range n.fetcher.Queued(max) {
		w, err := n.Why(ref)
		if err != nil {
			return out, err
		}
		out = append(out, w)
	}
	return out, nil
}
