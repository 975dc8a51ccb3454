package retrieval

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode/blobstore"
)

// State is a stage of a blob fetch.
type State int

// The stages of a fetch; Failed ends a fetch that did not finish. A fetch
// goes Pending, Locating, Fetching, Done; one whose holders could not be
// reached may go Waiting (for one of them to come back) and Locating
// again, for as long as its caller allows.
const (
	Pending State = iota
	Locating
	Fetching
	Done
	Failed
	Waiting
)

func (s State) String() string {
	return [...]string{"pending", "locating", "fetching", "done", "failed", "waiting"}[s]
}

// Status is a fetch's progress: its stage and, while fetching and when
// done, the bytes held verified of the blob's size.
type Status struct {
	State           State
	Received, Total int64
	// Holders are the peers found holding the blob (from Fetching on).
	Holders []peer.ID
	// Err is why a fetch failed, or, while Waiting, why the last try did.
	Err error
	// Until is when a Waiting fetch gives up.
	Until time.Time
}

// Fetch urgencies: a waiting fetch with a higher urgency starts first.
// (A device's standing in a group is its priority, syncnode.Priority; a
// fetch's place in the line is its urgency.)
const (
	UrgencyBackground = 0 // the server fetcher's
	UrgencyNormal     = 1
	UrgencyHigh       = 2
)

// Request is what a caller asks of a fetch.
type Request struct {
	// Urgency orders this fetch among those waiting to start.
	Urgency int
	// Status, if not nil, is called with every change of the fetch's
	// status, one call at a time, ending with Done or Failed.
	Status func(Status)
	// WaitForHolder is how long a fetch whose holders could not be
	// reached (gone, restarting, unreachable; not lying) waits for one to
	// come back: it is Waiting, and tries again whenever a peer connects
	// and every few seconds. Zero fails at once.
	WaitForHolder time.Duration
	// Hints are peers to ask first.
	Hints []peer.ID
	// Background marks the server fetcher's attempt: it waits for a
	// place with its likely holder (fetcher.ErrBusy), so that one slow
	// member holds up no more than half of the fetch slots.
	Background bool
}

// Result is what a fetch found: the blob, and the peers it asked and
// found holding it (also when it failed).
type Result struct {
	blobstore.Info
	Tried, Holders []peer.ID
}
