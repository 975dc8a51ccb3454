package node

import (
	"errors"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/blobproto"
)

// noteRoute records how a fetch of ref that met a relay went.
func (n *Node) noteRoute(ref syncnode.BlobRef, res blobproto.FetchResult, err error) {
	if route := blobproto.DescribeRoute(res, err, n.cfg.Relayed, n.cfg.RelayRate, n.peerName); route != "" {
		n.journal.NoteRoute(ref, route, time.Now())
	}
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
	n.journal.NoteHandoff(ref, what, time.Now())
}

// Why explains a blob's state on this node: held or not, who has it, what
// the server fetcher has tried and when it tries next.
type Why struct {
	Ref  syncnode.BlobRef
	Held bool
	Size int64
	// Shares are this node's ownership shares by group.
	Shares map[syncnode.GroupID]int
	// Pinned reports that the user pinned the blob here (PinBlob), at
	// PinnedAt: it is kept whatever the budget.
	Pinned   bool
	PinnedAt time.Time
	// Groups are the syncgroups the blob was learned through; ServerIn
	// reports whether this node is a server in one of them (and so fetches
	// it in the background).
	Groups   []syncnode.GroupID
	ServerIn bool
	// Locations are where the blob probably is, best first.
	Locations []WhyLocation
	// Copies are, per group, the verified server copies known and wanted.
	Copies []WhyCopies
	// Queued and Running describe the server fetcher's state; Attempts is
	// the persisted count of its attempts; NextAttempt is when the next
	// one is due.
	Queued, Running bool
	Attempts        int
	NextAttempt     time.Time
	// LastAttempt, LastErr, Tried and Holders describe the server
	// fetcher's last attempt, as its record keeps it.
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

// WhyCopies are the verified server copies of a blob a group has and
// wants: below Want, the blob is at risk and devices keep their copies.
type WhyCopies struct {
	Group       syncnode.GroupID
	Known, Want int
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
	w.Pinned, w.PinnedAt = n.custody.UserPinned(ref)
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
	for _, g := range w.Groups {
		w.Copies = append(w.Copies, WhyCopies{Group: g, Known: n.book.ServerCopies(g, sp, w.Held), Want: n.book.CopiesWanted(g)})
	}
	w.Restoring = slices.Contains(n.custody.Restoring(), ref)
	st := n.disc.Queue().Status(ref)
	w.Queued, w.Running, w.NextAttempt = st.Queued, st.Running, st.NextAttempt
	if a, err := n.journal.Attempt(ref); err == nil {
		w.Attempts = a.Count
	}
	if e, ok := n.journal.Read(ref); ok {
		w.LastAttempt, w.LastErr, w.Tried, w.Holders = e.Last, e.Err, e.Tried, e.Holders
		w.Handoff, w.HandoffAt = e.Handoff, e.HandoffAt
		w.Route, w.RouteAt = e.Route, e.RouteAt
	}
	return w, nil
}

// FetchQueue explains up to max blobs in the server fetcher's hands, those
// being fetched first, then the queue soonest first: each with its
// persisted attempt count, next attempt and journal.
func (n *Node) FetchQueue(max int) ([]Why, error) {
	var out []Why
	for _, ref := range n.disc.Queue().Queued(max) {
		w, err := n.Why(ref)
		if err != nil {
			return out, err
		}
		out = append(out, w)
	}
	return out, nil
}
