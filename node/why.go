package node

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/blobproto"
	"github.com/syncnode/syncnode/internal/explain"
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
type Why = explain.Why

// WhyLocation is one signpost location.
type WhyLocation = explain.Location

// WhyCopies are the verified server copies of a blob a group has and
// wants: below Want, the blob is at risk and devices keep their copies.
type WhyCopies = explain.Copies

// WhyUnreferenced is what collection knows of a blob in one group.
type WhyUnreferenced = explain.Unreferenced

// Why returns what this node knows of ref.
func (n *Node) Why(ref syncnode.BlobRef) (Why, error) {
	return explain.Sources{Blobs: n.blobs, Shares: n.ledger, Signposts: n.signposts, Pins: n.custody,
		Groups: n.book, Queue: n.disc.Queue(), Journal: n.journal, Collection: n.collector, NameOf: n.NameOf}.Blob(ref)
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
