// Package explain says why a blob is or is not on this node, from what
// each part of the node knows of it: the store, the shares, the pins, the
// signposts, the groups' specs, the server fetcher and its journal.
package explain

import (
	"errors"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/collect"
	"github.com/syncnode/syncnode/internal/journal"
	"github.com/syncnode/syncnode/signpost"
)

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
	Locations []Location
	// Copies are, per group, the verified server copies known and wanted.
	Copies []Copies
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
	// Unreferenced are the groups whose live rows no longer reference the
	// blob: since when, and when it is due to be collected here; or when
	// it was collected.
	Unreferenced []Unreferenced
}

// Unreferenced is what collection knows of a blob in one group.
type Unreferenced = collect.Group

// Location is one signpost location.
type Location struct {
	Peer string
	// Name is the name the peer gave itself in a shared group, if any.
	Name     string
	WhenSeen time.Time
	Server   bool
	Proxy    bool
	Addrs    []string
}

// Copies are the verified server copies of a blob a group has and wants:
// below Want, the blob is at risk and devices keep their copies.
type Copies struct {
	Group       syncnode.GroupID
	Known, Want int
}

// Sources are the parts of a node an explanation reads.
type Sources struct {
	Blobs interface {
		Stat(syncnode.BlobRef) (blobstore.Info, error)
	}
	Shares interface {
		Shares(syncnode.BlobRef) (map[syncnode.GroupID]int, error)
	}
	Signposts interface {
		Get(syncnode.BlobRef) (signpost.Signpost, error)
	}
	Pins   Pins
	Groups Groups
	Queue  interface {
		Status(syncnode.BlobRef) fetcher.Status
	}
	Journal    Journal
	Collection interface {
		State(syncnode.BlobRef) ([]collect.Group, error)
	}
	// NameOf returns the name a peer gave itself, or "".
	NameOf func(peer.ID) string
}

// Pins says what the user pinned and what is being restored.
type Pins interface {
	UserPinned(syncnode.BlobRef) (bool, time.Time)
	Restoring() []syncnode.BlobRef
}

// Groups says what this node's groups want of a blob.
type Groups interface {
	IsServerIn([]syncnode.GroupID) bool
	ServerCopies(syncnode.GroupID, signpost.Signpost, bool) int
	CopiesWanted(syncnode.GroupID) int
}

// Journal is the server fetcher's record per blob.
type Journal interface {
	Attempt(syncnode.BlobRef) (fetcher.Attempt, error)
	Read(syncnode.BlobRef) (journal.Entry, bool)
}

// Blob returns what the sources know of ref.
func (s Sources) Blob(ref syncnode.BlobRef) (Why, error) {
	w := Why{Ref: ref}
	if info, err := s.Blobs.Stat(ref); err == nil {
		w.Held, w.Size = true, info.Size
	}
	var err error
	if w.Shares, err = s.Shares.Shares(ref); err != nil {
		return w, err
	}
	w.Pinned, w.PinnedAt = s.Pins.UserPinned(ref)
	sp, err := s.Signposts.Get(ref)
	if err != nil && !errors.Is(err, syncnode.ErrNotFound) {
		return w, err
	}
	w.Groups = sp.Groups()
	w.ServerIn = s.Groups.IsServerIn(w.Groups)
	for _, l := range sp.Ranked() {
		loc := sp.Locations[l.Peer]
		w.Locations = append(w.Locations, Location{Peer: l.Peer.String(), Name: s.NameOf(l.Peer), WhenSeen: loc.WhenSeen,
			Server: loc.IsServer, Proxy: loc.IsProxy, Addrs: loc.Addrs})
	}
	for _, g := range w.Groups {
		w.Copies = append(w.Copies, Copies{Group: g, Known: s.Groups.ServerCopies(g, sp, w.Held), Want: s.Groups.CopiesWanted(g)})
	}
	if w.Unreferenced, err = s.Collection.State(ref); err != nil {
		return w, err
	}
	w.Restoring = slices.Contains(s.Pins.Restoring(), ref)
	st := s.Queue.Status(ref)
	w.Queued, w.Running, w.NextAttempt = st.Queued, st.Running, st.NextAttempt
	if a, err := s.Journal.Attempt(ref); err == nil {
		w.Attempts = a.Count
	}
	if e, ok := s.Journal.Read(ref); ok {
		w.LastAttempt, w.LastErr, w.Tried, w.Holders = e.Last, e.Err, e.Tried, e.Holders
		w.Handoff, w.HandoffAt = e.Handoff, e.HandoffAt
		w.Route, w.RouteAt = e.Route, e.RouteAt
	}
	return w, nil
}
