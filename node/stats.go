package node

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode/internal/signposting"
)

// Stats are the node's counters and gauges.
type Stats struct {
	// FetchQueue is the server fetcher's queue length.
	FetchQueue int
	// FetchAttempts and FetchFailures count the server fetcher's attempts.
	FetchAttempts, FetchFailures int64
	// BytesIn counts blob bytes received, BytesOut blob bytes served.
	BytesIn, BytesOut int64
	// VerifyFailures counts holders dropped for bytes that did not match.
	VerifyFailures int64
	// Evictions counts blobs evicted over budget.
	Evictions int64
	// Demoted are the holders now left out of fetches: banned for lying,
	// or demoted for stalling, truncating or resetting.
	Demoted []peer.ID
	// Damaged counts stored copies found damaged (and deleted, to be
	// restored); Scrubbed the bytes the scrubber re-verified in ScrubPasses
	// whole passes; Restoring the blobs whose copy is being restored.
	Damaged, Scrubbed, ScrubPasses int64
	Restoring                      int
	// Blobs and BlobBytes describe the blob store: the blobs the walk of
	// the store after the open has reached while TakingUp, and every blob
	// held once it is done (a blob being put or fetched counts once it
	// has landed).
	Blobs     int
	BlobBytes int64
	TakingUp  bool
	// Pinned counts the blobs the user pinned here (PinBlob).
	Pinned int
	// SyncMessages counts the frames this node sent in sync rounds and
	// pushes.
	SyncMessages int64
	// Collected counts (blob, group) pairs collected since the node
	// opened: no live row referenced them for the grace; CollectedCopies
	// the copies deleted with them; Unreferenced the pairs whose grace
	// runs now.
	Collected, CollectedCopies, Unreferenced int64
	// RowsRefused counts, per writer, the rows this node refused because
	// they would take the writer over its budget.
	RowsRefused map[peer.ID]int64
}

// Stats returns the node's counters now.
func (n *Node) Stats() Stats {
	rs, cs, gc := n.retr.Stats(), n.custody.Stats(), n.collector.Stats()
	attempts, failures := n.disc.Stats()
	s := Stats{
		FetchQueue:    n.disc.Queue().Len(),
		FetchAttempts: attempts, FetchFailures: failures,
		BytesIn: rs.BytesIn, BytesOut: n.service.Stats().BytesOut,
		VerifyFailures: rs.Rejected, Evictions: cs.Evictions,
		Demoted: rs.Demoted,
		Damaged: cs.Damaged, Scrubbed: cs.Scrubbed, ScrubPasses: cs.ScrubPasses,
		Restoring:    cs.Restoring,
		SyncMessages: n.sync.Stats().Messages,
		RowsRefused:  n.sync.Refused(),
		Collected:    gc.Collected, CollectedCopies: gc.Deleted, Unreferenced: gc.Waiting,
		TakingUp: n.takingUp.Load(), Pinned: n.custody.UserPinCount(),
	}
	s.Blobs, s.BlobBytes = n.custody.Held()
	return s
}

// GroupDurability says how safe one group's blobs are, as far as this node
// knows (see signposting.GroupDurability).
type GroupDurability = signposting.GroupDurability

// Durability returns, per group this node syncs, how many referenced
// blobs have no verified server copy.
func (n *Node) Durability() ([]GroupDurability, error) { return n.book.Durability(n.holds) }
