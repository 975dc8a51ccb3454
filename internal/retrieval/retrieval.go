// Package retrieval fetches blobs for a node: it locates their holders
// (signposts, members, the DHT), ranks holders by how they served, shares
// one transfer among the callers asking for a blob, admits fetches by
// urgency, and commits what verified.
package retrieval

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/blobproto"
	"github.com/syncnode/syncnode/internal/connectivity"
	"github.com/syncnode/syncnode/internal/workgroup"
	"github.com/syncnode/syncnode/signpost"
)

// ErrClosed reports a fetch asked of a Retriever that was closing.
var ErrClosed = errors.New("retrieval: closed")

// Store is the node's blob store as retrieval reads it.
type Store interface {
	Stat(ref syncnode.BlobRef) (blobstore.Info, error)
}

// Client is the blob protocol's client: it asks holders and fetches.
type Client interface {
	Have(ctx context.Context, p peer.ID, ref syncnode.BlobRef) (blobproto.HaveResult, error)
	FetchWith(ctx context.Context, ref syncnode.BlobRef, holders []peer.ID, opts blobproto.FetchOptions) (blobproto.FetchResult, error)
}

// Providers finds the peers that announced a blob in the DHT.
type Providers interface {
	FindProviders(ctx context.Context, ref syncnode.BlobRef, max int) ([]peer.AddrInfo, error)
}

// Directory is what the node knows of where blobs are: signposts, and
// the members of its groups.
type Directory interface {
	// Signpost returns ref's signpost (syncnode.ErrNotFound: none).
	Signpost(ref syncnode.BlobRef) (signpost.Signpost, error)
	// Learn takes in the signpost a peer that lacks ref answered with.
	Learn(from peer.ID, ref syncnode.BlobRef, sp *signpost.Signpost)
	// Forget drops peers from ref's signpost: they sent bytes that did
	// not verify.
	Forget(ref syncnode.BlobRef, peers []peer.ID)
	// MembersOf lists the other members of those of groups this node is
	// in, servers first, their addresses learnt.
	MembersOf(groups []syncnode.GroupID) []peer.ID
	// Public reports whether a blob of groups may be looked up in the
	// DHT, which tells its ref to strangers.
	Public(groups []syncnode.GroupID) bool
}

// Keeper is what the node's custody of copies does around a fetch.
type Keeper interface {
	// Receive is called as a transfer of ref starts, and returns how the
	// copy is committed: commit makes it visible, with whatever custody
	// does around it (a durable mark that the copy came from a peer, the
	// blob's lock).
	Receive(ref syncnode.BlobRef) (commit func(commit func() (blobstore.Info, error)) (blobstore.Info, error))
	// Fetched records that this node now holds ref, of size bytes.
	Fetched(ref syncnode.BlobRef, size int64)
}

// Config configures a Retriever. Zero fields take the documented
// defaults.
type Config struct {
	// IOTimeout bounds each question to a holder and each DHT lookup
	// (default 20 s).
	IOTimeout time.Duration
	// MaxFetches bounds the fetches running at once (default 16); a
	// background fetch waits for a place with its likely holder, who
	// serves at most half of them.
	MaxFetches int
	// Route, if not nil, is told of every transfer (except a whole-blob
	// ask the holder could not serve whole): what went through relays.
	Route func(ref syncnode.BlobRef, res blobproto.FetchResult, err error)
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.IOTimeout < 0 || c.MaxFetches < 0 {
		return errors.New("retrieval: negative timeout or fetch bound")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.IOTimeout == 0 {
		c.IOTimeout = 20 * time.Second
	}
	if c.MaxFetches == 0 {
		c.MaxFetches = 16
	}
	return c
}

// Retriever fetches blobs for one node.
type Retriever struct {
	cfg    Config
	log    *slog.Logger
	h      host.Host
	store  Store
	client Client
	dht    Providers
	dir    Directory
	keep   Keeper

	work *workgroup.Group
	ctx  context.Context

	gate *gate
	// perHolder bounds the background fetches one likely holder serves.
	perHolder *holderSlots
	rep       reputation
	returns   returns
	// arrivals wakes fetches waiting for a holder to come back.
	arrivals arrivals
	flights  flights

	bytesIn, rejected atomic.Int64
}

// New returns a Retriever of blobs into store, through client, asking
// dir and the DHT where blobs are, and keep around each fetched copy.
func New(cfg Config, h host.Host, store Store, client Client, dht Providers, dir Directory, keep Keeper, log *slog.Logger) (*Retriever, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	work := workgroup.New()
	return &Retriever{cfg: cfg, log: log, h: h, store: store, client: client, dht: dht, dir: dir, keep: keep,
		work: work, ctx: work.Context(),
		gate: newGate(cfg.MaxFetches), perHolder: newHolderSlots(cfg.MaxFetches / 2),
		flights: flights{m: map[syncnode.BlobRef]*flight{}}}, nil
}

// Close ends every fetch and waits for them.
func (r *Retriever) Close() { r.work.Close() }

// Stats are a Retriever's running totals.
type Stats struct {
	// BytesIn counts blob bytes received.
	BytesIn int64
	// Rejected counts holders dropped for bytes that did not verify.
	Rejected int64
	// Demoted are the holders left out of fetches now: banned for lying,
	// or demoted for stalling, truncating or resetting.
	Demoted []peer.ID
}

// Stats returns the totals now.
func (r *Retriever) Stats() Stats {
	return Stats{BytesIn: r.bytesIn.Load(), Rejected: r.rejected.Load(), Demoted: r.rep.demoted(time.Now())}
}

// InGoodStanding reports whether p is neither banned nor demoted.
func (r *Retriever) InGoodStanding(p peer.ID) bool {
	_, good := r.rep.rank([]peer.ID{p}, time.Now())
	return good
}

// Arrived tells fetches waiting for a holder that a peer connected.
func (r *Retriever) Arrived() { r.arrivals.arrived() }

// MayRetry reports whether p's return may retry the fetches waiting on
// it now (see returns).
func (r *Retriever) MayRetry(p peer.ID) bool { return r.returns.may(p, time.Now()) }

// Retried records that p's return retried fetches: until p serves a blob,
// its next returns retry nothing for a pause that doubles each time.
func (r *Retriever) Retried(p peer.ID) { r.returns.retried(p, time.Now()) }

// HolderSlot waits for a place among the background fetches p serves.
func (r *Retriever) HolderSlot(ctx context.Context, p peer.ID) (release func(), err error) {
	return r.perHolder.acquire(ctx, p)
}

// InFlight reports whether a fetch of ref is under way.
func (r *Retriever) InFlight(ref syncnode.BlobRef) bool { return r.flightOf(ref) != nil }

// Have asks p whether it holds ref, within a fraction of the IOTimeout.
func (r *Retriever) Have(ctx context.Context, p peer.ID, ref syncnode.BlobRef) (blobproto.HaveResult, error) {
	ctx, cancel := context.WithTimeout(ctx, r.haveTimeout())
	defer cancel()
	return r.client.Have(ctx, p, ref)
}

func (r *Retriever) haveTimeout() time.Duration { return max(r.cfg.IOTimeout/4, time.Second) }

// connected reports whether this node has a connection to p.
func (r *Retriever) connected(p peer.ID) bool { return connectivity.Connected(r.h, p) }
