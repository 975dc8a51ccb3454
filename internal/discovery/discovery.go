// Package discovery turns the blob refs that rows carry into what a node
// does about them — signposts, the creator's grant, announcements — and,
// on a server, feeds and works the background fetcher's queue.
package discovery

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/journal"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/internal/signposting"
	"github.com/syncnode/syncnode/internal/workgroup"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// Groups is the node's groups as discovery reads them.
type Groups interface {
	// Groups lists the groups this node is in.
	Groups() []syncnode.GroupID
	// RowsFrom returns up to limit live rows of g under prefix from key
	// start on, in key order, and the start of the next page ("" after
	// the last).
	RowsFrom(g syncnode.GroupID, prefix, start string, limit int) ([]syncgroup.Row, string, error)
	// DevType is this node's device type in g.
	DevType(g syncnode.GroupID) (syncnode.DevType, bool)
}

// Grants are the share moves discovery starts.
type Grants interface {
	// GrantCreator grants this node the creator's shares of a held ref in
	// groups (see handoff.Handoffs.GrantCreator) and reports whether it
	// holds ref.
	GrantCreator(ref syncnode.BlobRef, groups []syncnode.GroupID, introduced func(syncnode.GroupID) bool) (bool, error)
	// TakeShares asks the holders of ref for their shares.
	TakeShares(ctx context.Context, ref syncnode.BlobRef, extra []peer.ID, waitAll bool) error
	// Balanced reports a server with no room left that may leave ref to
	// the other servers of its groups, which hold enough copies.
	Balanced(ctx context.Context, ref syncnode.BlobRef) (bool, error)
}

// Fetches are what discovery asks of retrieval.
type Fetches interface {
	Fetch(ctx context.Context, ref syncnode.BlobRef, req retrieval.Request) (retrieval.Result, error)
	// MayRetry reports whether p's return may retry fetches; Retried
	// records that it did.
	MayRetry(p peer.ID) bool
	Retried(p peer.ID)
}

// Announcer provides held blobs in the DHT.
type Announcer interface {
	Add(ref syncnode.BlobRef)
}

// Deps are what a Discovery works with.
type Deps struct {
	Self      peer.ID
	Book      *signposting.Book
	Signposts *signpost.Store
	Journal   *journal.Journal
	Ledger    *ownership.Ledger
	Store     blobstore.Store
	Groups    Groups
	Grants    Grants
	Fetches   Fetches
	Announcer Announcer
	// AfterScan, if not nil, runs after each scan (an eviction pass).
	AfterScan func()
	// Room, if not nil, reports whether this node may take on more
	// blobs (see Grants.Balanced).
	Room func() bool
	// Referenced, if not nil, is told of each ref a row of groups names,
	// as the row is written or arrives (collection counts it seen).
	Referenced func(refs []syncnode.BlobRef, groups [][]syncnode.GroupID) error
}

// Discovery is one node's discovery and server fetcher.
type Discovery struct {
	cfg       fetcher.Config
	log       *slog.Logger
	self      peer.ID
	book      *signposting.Book
	signposts *signpost.Store
	journal   *journal.Journal
	ledger    *ownership.Ledger
	store     blobstore.Store
	groups    Groups
	handoffs  Grants
	retr      Fetches
	announcer Announcer
	afterScan func()
	refd      func([]syncnode.BlobRef, [][]syncnode.GroupID) error
	room      func() bool
	fetcher   *fetcher.Fetcher

	work *workgroup.Group
	ctx  context.Context

	attempts, failures atomic.Int64
}

// New returns a Discovery whose server fetcher runs with cfg; Start runs
// it.
func New(cfg fetcher.Config, d Deps, log *slog.Logger) (*Discovery, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	work := workgroup.New()
	x := &Discovery{cfg: cfg, log: log, self: d.Self, book: d.Book, signposts: d.Signposts, journal: d.Journal,
		ledger: d.Ledger, store: d.Store, groups: d.Groups, handoffs: d.Grants, retr: d.Fetches,
		announcer: d.Announcer, afterScan: d.AfterScan, refd: d.Referenced, room: d.Room, work: work, ctx: work.Context()}
	seed := uint64(time.Now().UnixNano())
	var err error
	if x.fetcher, err = fetcher.New(cfg, x.attempt, d.Journal, rand.New(rand.NewPCG(seed, seed>>1|1)), log); err != nil {
		return nil, err
	}
	return x, nil
}

// Start runs the server fetcher, its periodic scans, and a walk of the
// stored rows for refs a stop cut short.
func (d *Discovery) Start() {
	d.fetcher.Start(d.ctx)
	d.work.Go(func() { fetcher.RunScans(d.ctx, d.cfg, d.log, d.scan) })
	d.work.Go(d.rediscover)
}

// Close stops the fetcher and the background work, and waits.
func (d *Discovery) Close() {
	d.work.Stop()
	d.fetcher.Stop()
	d.work.Wait()
}

// Queue is the server fetcher.
func (d *Discovery) Queue() *fetcher.Fetcher { return d.fetcher }

// Stats are the server fetcher's totals: attempts made and failed.
func (d *Discovery) Stats() (attempts, failures int64) { return d.attempts.Load(), d.failures.Load() }

// holds reports whether this node holds ref, whole and verified.
func (d *Discovery) holds(ref syncnode.BlobRef) bool { return blobstore.Holds(d.store, ref) }

// peerStrings returns ps as strings.
func peerStrings(ps []peer.ID) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
