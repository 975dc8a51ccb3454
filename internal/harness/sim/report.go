package sim

import (
	"fmt"
	"time"

	"github.com/syncnode/syncnode/blobstore/s3store"
)

// Config sizes a simulation.
type Config struct {
	Devices, Leaves, Servers int
	// Blobs is how many rows with a new blob are written; BlobSize is each
	// blob's size.
	Blobs, BlobSize int
	// Pause bounds the wait after each write, drawn uniformly below it
	// (0: 20 ms); a longer one lowers the load the writes put on the
	// machine.
	Pause time.Duration
	// Budget is each device's and leaf's blob budget in bytes.
	Budget int64
	// Crashes is how many times a random node is stopped mid-run and
	// restarted a little later.
	Crashes int
	// Partitions is how many times the nodes are cut into two random
	// sides (connections across refused) for a stretch of writes, then
	// healed.
	Partitions int
	// Departures and Ejections are how many times a random member (not
	// the admin) leaves the group, or is ejected by the admin, and is
	// invited back a little later. A leave or an ejection that would leave
	// a blob at risk is refused, and counted.
	Departures, Ejections int
	// ServerStore, if not nil, gives server k (0, 1, …) an object store
	// for its blobs, its endpoint that of Faults[k], a fault proxy;
	// StoreFaults is then how many times one server's store fails (503 on
	// every request, or reads cut short) for a stretch of writes.
	ServerStore func(k int) *s3store.Config
	Faults      []StoreFaults
	StoreFaults int
	// Unreferences is how many times a member deletes or overwrites the
	// row of an older blob, which is then to be collected everywhere.
	Unreferences int
	// Grace is every node's collection grace (default 3 s).
	Grace time.Duration
	// Settle bounds the wait, after the last write, for every blob to
	// reach a server.
	Settle time.Duration
	Seed   uint64
	// Dir holds the nodes' data directories.
	Dir string
}

// StoreFaults drives the faults between a server and its object store
// (see package s3faults).
type StoreFaults interface {
	// Addr is the endpoint the server uses.
	Addr() string
	// CutReads has the next n ranged reads end halfway, the store
	// unavailable after each.
	CutReads(n int)
	// SetUnavailable has every request fail with 503, or pass.
	SetUnavailable(down bool)
}

// Report is what a simulation found.
type Report struct {
	Nodes, Blobs, Crashes, Partitions int
	// StoreFaults counts the object-store fault episodes.
	StoreFaults int
	// Departures and Ejections count the leaves and ejections done;
	// Refused those refused for leaving a blob at risk.
	Departures, Ejections, Refused int
	// Lost counts blobs no node holds at the end: must be 0.
	Lost int
	// NotOnServer counts blobs no server holds at the end.
	NotOnServer int
	// BadShares counts blobs whose shares do not add up to 2.
	BadShares int
	// SharesWithoutCopy counts (node, blob) pairs at the end where the
	// node holds shares and no verified copy: must be 0 (I3).
	SharesWithoutCopy int
	// PinnedAfterServer counts blobs a server holds verified while a
	// device still holds shares of them at the end: must be 0 (I6).
	PinnedAfterServer int
	// Unreferenced counts rows deleted or overwritten; Collected the
	// blobs they named that no node held (shares or copy) at the end,
	// Uncollected those still held somewhere: must be 0.
	Unreferenced, Collected, Uncollected int
	// RowsFirst counts blobs whose row was written before their bytes were
	// stored; Removed and RmRefused count users' rm of held blobs done and
	// refused (pinned); Fetches counts devices' fetches racing evictions.
	RowsFirst, Removed, RmRefused, Fetches int
	// P50 and P99 are the time from a blob's first reference to its first
	// verified server copy.
	P50, P99 time.Duration
	// Known50 and Known99 are the time from a blob's first reference to
	// the first server learning of it (a row or signpost naming it).
	Known50, Known99 time.Duration
	// BytesMoved sums the blob bytes every node received; Wanted is what
	// the copies asked for need: every blob on every server, plus the
	// blobs devices fetched at their users' request.
	BytesMoved, Wanted int64
	// Messages counts the sync frames (pushes and rounds) every node sent;
	// CPU is the process's CPU time from the first write to the end.
	Messages  int64
	CPU       time.Duration
	Elapsed   time.Duration
	blobBytes int64 // the blobs' sizes summed
}

func (c Config) grace() time.Duration {
	if c.Grace <= 0 {
		return 3 * time.Second
	}
	return c.Grace
}

// PerWritePerNode returns x divided by the writes and the nodes.
func (r Report) PerWritePerNode(x float64) float64 {
	return x / float64(max(1, r.Blobs)) / float64(max(1, r.Nodes))
}

func (r Report) String() string {
	return fmt.Sprintf("nodes %d, blobs %d, crashes %d, partitions %d, object-store faults %d, leaves %d, ejections %d (%d refused: blobs at risk), elapsed %s\n"+
		"time to first server copy: p50 %s, p99 %s\n"+
		"rows before their blob: %d; user rm done %d, refused (pinned) %d; device fetches racing evictions: %d\n"+
		"blobs lost: %d; not on a server: %d; share totals wrong: %d\n"+
		"shares held without a copy: %d; blobs pinned on a device after a server copy: %d\n"+
		"rows deleted or overwritten: %d; their blobs collected everywhere: %d, still held somewhere: %d\n"+
		"time to first server knowing of the blob: p50 %s, p99 %s\n"+
		"per write per node: %.1f sync messages, %.2f ms CPU\n"+
		"bytes moved: %d (%.1f× the blobs' bytes, %.2f× what the copies wanted need)",
		r.Nodes, r.Blobs, r.Crashes, r.Partitions, r.StoreFaults, r.Departures, r.Ejections, r.Refused, r.Elapsed.Round(time.Millisecond),
		r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond),
		r.RowsFirst, r.Removed, r.RmRefused, r.Fetches,
		r.Lost, r.NotOnServer, r.BadShares, r.SharesWithoutCopy, r.PinnedAfterServer,
		r.Unreferenced, r.Collected, r.Uncollected,
		r.Known50.Round(time.Millisecond), r.Known99.Round(time.Millisecond),
		r.PerWritePerNode(float64(r.Messages)), r.PerWritePerNode(float64(r.CPU.Microseconds())/1000),
		r.BytesMoved, float64(r.BytesMoved)/float64(max(1, r.blobBytes)), float64(r.BytesMoved)/float64(max(1, r.Wanted)))
}
