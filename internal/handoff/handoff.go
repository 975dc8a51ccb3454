// Package handoff moves ownership shares between a node and the members
// of its groups: the creator's grant, hand-offs after a round, takes after
// a fetch, a leave that hands everything over, an ejection that keeps the
// only copy, and the reclaim after a lost database.
package handoff

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/blobproto"
	"github.com/syncnode/syncnode/internal/connectivity"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/internal/shares"
	"github.com/syncnode/syncnode/internal/signposting"
	"github.com/syncnode/syncnode/internal/workgroup"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/syncgroup"
)

// ErrAtRisk reports a leave or an ejection refused because it would
// leave blobs at risk: shares this node holds in the group could be handed
// to no member, or blobs only the ejected member held could not be fetched.
var ErrAtRisk = errors.New("handoff: blobs would be left at risk")

// Groups is the membership of this node's groups as hand-offs use it.
type Groups interface {
	shares.Priorities
	// IsMember reports whether p is a member of g.
	IsMember(p peer.ID, g syncnode.GroupID) bool
	// Members lists g's members.
	Members(g syncnode.GroupID) []syncgroup.Member
	// SyncWith runs a round of g with p.
	SyncWith(ctx context.Context, g syncnode.GroupID, p peer.ID) error
	// RowsFrom returns up to limit live rows of g under prefix from key
	// start on, in key order, and the start of the next page ("" after
	// the last).
	RowsFrom(g syncnode.GroupID, prefix, start string, limit int) ([]syncgroup.Row, string, error)
	// Ejected reports whether an admin ejected this node from g.
	Ejected(g syncnode.GroupID) bool
	// Eject removes p from g; this node is an admin.
	Eject(g syncnode.GroupID, p peer.ID) error
	// Leave leaves g, telling the members (see syncer.Syncer.Leave).
	Leave(ctx context.Context, g syncnode.GroupID, force bool) error
}

// Copies are the node's copies as hand-offs keep them.
type Copies interface {
	// Lock locks ref against deletion and share changes.
	Lock(ref syncnode.BlobRef) (unlock func())
	// Pin keeps ref from eviction until unpin.
	Pin(ref syncnode.BlobRef) (unpin func())
	// Restore gets ref's lost copy back from a peer.
	Restore(ref syncnode.BlobRef)
}

// Fetcher gets blobs from the members.
type Fetcher interface {
	Fetch(ctx context.Context, ref syncnode.BlobRef, req retrieval.Request) (retrieval.Result, error)
	HolderSlot(ctx context.Context, p peer.ID) (release func(), err error)
	Have(ctx context.Context, p peer.ID, ref syncnode.BlobRef) (blobproto.HaveResult, error)
}

// Config configures Handoffs. Zero fields take the documented defaults.
type Config struct {
	// IOTimeout bounds each request to a member (default 20 s).
	IOTimeout time.Duration
	// EscrowWait is how long shares offered wait in escrow for an
	// acceptor that does not answer (default shares.DefaultEscrowWait).
	EscrowWait time.Duration
	// Note, if not nil, records the outcome of a blob's hand-off, for why.
	Note func(ref syncnode.BlobRef, what string)
	// Moved, if not nil, is told of n shares of ref in g that this node
	// took (in, from p; p is empty for a creator's grant) or gave to p.
	Moved func(ref syncnode.BlobRef, g syncnode.GroupID, p peer.ID, n int, in bool)
	// Room, if not nil, reports whether this node may take on more
	// blobs: a server with none left takes no blob that enough other
	// servers hold (Balanced).
	Room func() bool
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.IOTimeout < 0 || c.EscrowWait < 0 {
		return errors.New("handoff: negative timeout")
	}
	return nil
}

// Handoffs moves one node's shares.
type Handoffs struct {
	cfg    Config
	log    *slog.Logger
	self   peer.ID
	host   host.Host
	ledger *ownership.Ledger
	book   *signposting.Book
	groups Groups
	copies Copies
	store  blobstore.Store
	fetch  Fetcher
	shares *shares.Service
	takes  takes

	work *workgroup.Group
	ctx  context.Context

	reclaims reclaimQueue
	mu       sync.Mutex
	// running are the hand-offs under way, by group and member.
	running map[handoffKey]bool
	// retry is when a blob's hand-off to a peer may be asked again after
	// one that failed.
	retry map[handoffRef]handoffBackoff
}

// New returns the hand-offs of the node on h, whose shares ledger keeps,
// running the share protocol; store is its blob store as reads see it.
func New(cfg Config, h host.Host, ledger *ownership.Ledger, book *signposting.Book, groups Groups, copies Copies, store blobstore.Store, fetch Fetcher, log *slog.Logger) (*Handoffs, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.IOTimeout == 0 {
		cfg.IOTimeout = 20 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	work := workgroup.New()
	x := &Handoffs{cfg: cfg, log: log, self: h.ID(), host: h, ledger: ledger, book: book, groups: groups, copies: copies,
		store: store, fetch: fetch, work: work, ctx: work.Context(),
		running: map[handoffKey]bool{}, retry: map[handoffRef]handoffBackoff{}}
	x.takes.h = x
	sc := shares.Config{IOTimeout: cfg.IOTimeout, AskWait: 10 * cfg.IOTimeout, EscrowWait: cfg.EscrowWait,
		Asked: x.asked, Settled: x.settled, Challenged: x.challenged}
	var err error
	if x.shares, err = shares.New(h, ledger, groups, x, sc, log); err != nil {
		return nil, err
	}
	return x, nil
}

// Start runs the background work: transfers left in escrow settled, blobs
// recovered after a lost database reclaimed.
func (h *Handoffs) Start() {
	h.work.Go(h.recoverTransfers)
	h.work.Go(h.runReclaims)
}

// Close stops the share service and the background work, and waits.
func (h *Handoffs) Close() {
	h.work.Stop()
	h.shares.Close()
	h.work.Wait()
}

// Shares returns the share protocol's service.
func (h *Handoffs) Shares() *shares.Service { return h.shares }

// connected reports whether this node has a connection to p.
func (h *Handoffs) connected(p peer.ID) bool { return connectivity.Connected(h.host, p) }

// holds reports whether this node holds ref, whole and verified.
func (h *Handoffs) holds(ref syncnode.BlobRef) bool { return blobstore.Holds(h.store, ref) }

// note records the outcome of ref's hand-off.
func (h *Handoffs) moved(ref syncnode.BlobRef, g syncnode.GroupID, p peer.ID, n int, in bool) {
	if h.cfg.Moved != nil && n > 0 {
		h.cfg.Moved(ref, g, p, n, in)
	}
}

func (h *Handoffs) note(ref syncnode.BlobRef, what string) {
	if h.cfg.Note != nil {
		h.cfg.Note(ref, what)
	}
}

// Holds implements shares.Copies.
func (h *Handoffs) Holds(ref syncnode.BlobRef) bool { return h.holds(ref) }

// WithCopy implements shares.Copies: fn runs with ref locked against
// deletion, held saying whether this node holds it verified.
func (h *Handoffs) WithCopy(ref syncnode.BlobRef, fn func(held bool) error) error {
	return h.withCopy(ref, fn)
}

// Open implements shares.Copies.
func (h *Handoffs) Open(ref syncnode.BlobRef) (shares.Blob, error) { return h.store.Open(ref) }

var _ shares.Copies = (*Handoffs)(nil)
