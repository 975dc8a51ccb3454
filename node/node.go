// Package node wires a syncnode device together from its parts — stores,
// host, sync, connectivity, retrieval, custody, hand-offs, signposting
// and discovery — behind the Go API that the daemon, the CLI and the
// feature tests use.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/s3store"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/blobproto"
	"github.com/syncnode/syncnode/internal/collect"
	"github.com/syncnode/syncnode/internal/connectivity"
	"github.com/syncnode/syncnode/internal/custody"
	"github.com/syncnode/syncnode/internal/discovery"
	"github.com/syncnode/syncnode/internal/grouprecord"
	"github.com/syncnode/syncnode/internal/handoff"
	"github.com/syncnode/syncnode/internal/holds"
	"github.com/syncnode/syncnode/internal/journal"
	"github.com/syncnode/syncnode/internal/nodeaccess"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/internal/signposting"
	"github.com/syncnode/syncnode/internal/syncer"
	"github.com/syncnode/syncnode/internal/workgroup"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// ErrPinned reports a blob that cannot be removed because this device still
// holds ownership shares of it (or has some in escrow, or work in progress
// needs the copy); RemoveBlob's *HeldError says which.
var ErrPinned = holds.ErrPinned

// Config configures a node. Zero fields take the documented defaults.
type Config struct {
	// DataDir holds the node's stores (blobs/, db/) and identity key.
	DataDir string
	// NoLAN turns LAN discovery off. By default the node announces itself
	// on its LAN with multicast DNS and connects to the members of its
	// groups found there, as the daemon does unless `init -no-lan`; a
	// join then needs no address of the admin when the admin is on the
	// same LAN. Tests that run many nodes in one process turn it off.
	NoLAN bool
	// Name is the device's name ("laptop"), written into its membership
	// of every group and shown by the others beside its peer ID; empty:
	// none.
	Name string
	// Log receives the node's logs; nil discards them.
	Log *slog.Logger
	// ListenAddrs are the host's listen multiaddrs (default TCP and QUIC on
	// 127.0.0.1, ports chosen by the system).
	ListenAddrs []string
	// SyncInterval is the period of the safety-net sync rounds (default 30 s).
	SyncInterval time.Duration
	// IOTimeout bounds each network read or write (default 20 s).
	IOTimeout time.Duration
	// EscrowWait is how long shares this node offered wait in escrow for
	// an acceptor that does not answer before the transfer is ended
	// without it (default shares.DefaultEscrowWait).
	EscrowWait time.Duration
	// CollectGrace is how long no live row of a group may reference a blob
	// while this node is up before the group's shares of it here dissolve
	// and, if nothing else keeps it, the copy is deleted (default
	// collect.DefaultGrace, a day; negative: never). A row that references
	// it again within the grace keeps it.
	CollectGrace time.Duration
	// Fetcher configures the server fetcher and its scans (nil: the
	// defaults of a zero fetcher.Config).
	Fetcher *fetcher.Config
	// MaxFetches bounds the blob fetches running at once, the server
	// fetcher's included; waiting fetches start by urgency (default 16).
	MaxFetches int
	// BlobBudget is the most bytes of blobs this device keeps when it is a
	// server in no group: above it, least-recently-used blobs with no
	// shares are evicted. A server keeps every blob it holds whatever its
	// budget, but past it fetches no blob that as many other servers of
	// its groups hold as the groups want (Spec.Copies). 0 means no budget.
	BlobBudget int64
	// Bootstrap are peers the node connects to at start, so that its DHT
	// has someone to ask before any syncgroup brings a member.
	Bootstrap []peer.AddrInfo
	// ScrubPeriod is how often every held blob is re-verified against its
	// tree in the background (default DefaultScrubPeriod; negative: never).
	ScrubPeriod time.Duration
	// ScrubMaxRate caps the scrubber's reads in bytes per second (default
	// DefaultScrubMaxRate).
	ScrubMaxRate int64
	// Gater, if not nil, decides which peers the host may connect to and
	// accept (a firewall, or a test's network partition).
	Gater connmgr.ConnectionGater
	// Relayed is what a blob transfer does when the holder is reachable
	// only through a circuit relay (default p2p.RelayThrottle, at
	// RelayRate bytes per second for all such transfers together,
	// default 1 MiB/s).
	Relayed   p2p.RelayPolicy
	RelayRate int64
	// S3, if not nil, keeps the node's blobs in an S3-compatible bucket
	// (see package s3store) instead of DataDir/blobs, which then only
	// stages puts and fetches; Owner and Staging are set by the node.
	S3 *s3store.Config
	// RelayMaxReservations and RelayMaxCircuits bound this node's relay
	// (run for the members of the groups it is a server in): members
	// holding a reservation at once (default 128), and circuits open to
	// one member at once (default 16).
	RelayMaxReservations, RelayMaxCircuits int
	// FeedRetain is how many of the latest events the change feed keeps
	// for watchers to resume from (default feed.DefaultRetain).
	FeedRetain int
	// Access, if not nil, is filled by Open with the node's share ledger
	// and libp2p host, for this module's test harnesses, which inject
	// faults with them. Its type is internal: an application cannot set
	// it, and reaches neither.
	Access *nodeaccess.Access
	// takeUpStarts, if set, runs before the walk of the store after the
	// open: a test holds the walk back with it.
	takeUpStarts func()
}

// Validate reports a setting that cannot work: no DataDir, an unknown
// relay policy, or a Fetcher config that fetcher refuses. Zero fields are
// never refused: Open gives them their defaults.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("node: no data directory")
	}
	if c.Relayed != "" {
		if _, err := p2p.ParseRelayPolicy(string(c.Relayed)); err != nil {
			return err
		}
	}
	if c.Fetcher != nil {
		return c.Fetcher.Validate()
	}
	return nil
}

// setDefaults gives every zero field its default.
func (c *Config) setDefaults() {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = p2p.DefaultHostConfig().ListenAddrs
	}
	if c.SyncInterval <= 0 {
		c.SyncInterval = 30 * time.Second
	}
	if c.IOTimeout <= 0 {
		c.IOTimeout = 20 * time.Second
	}
	if c.Fetcher == nil {
		c.Fetcher = &fetcher.Config{}
	}
	if c.MaxFetches <= 0 {
		c.MaxFetches = 16
	}
	if c.ScrubPeriod == 0 {
		c.ScrubPeriod = DefaultScrubPeriod
	}
	if c.ScrubMaxRate <= 0 {
		c.ScrubMaxRate = DefaultScrubMaxRate
	}
	if c.Relayed == "" {
		c.Relayed = p2p.RelayThrottle
	}
	if c.RelayMaxReservations <= 0 {
		c.RelayMaxReservations = 128
	}
	if c.RelayMaxCircuits <= 0 {
		c.RelayMaxCircuits = 16
	}
}

// Node is one syncnode device.
type Node struct {
	cfg Config
	log *slog.Logger
	// takingUp is set while the store is walked after the open.
	takingUp atomic.Bool
	// lastSeen is when the last connection to each peer ended.
	lastSeen sync.Map // peer.ID → time.Time

	db    *badger.DB
	blobs blobStore
	// store is blobs as the blob service and users read it: a damaged
	// copy found by a read is handled at once.
	store     blobstore.Store
	signposts *signpost.Store
	// journal keeps per blob the server fetcher's attempts and the last
	// hand-off and relay route.
	journal *journal.Journal
	// book keeps the signposts in step with the groups.
	book   *signposting.Book
	ledger *ownership.Ledger
	groups *syncgroup.Store
	// feed is the change feed that Watch reads.
	feed *feed.Log

	h host.Host
	// conn keeps the node reachable: addresses, NAT, relay, LAN.
	conn *connectivity.Service
	// dbFresh: the database was created at this open. Blobs the store
	// holds already were held before it was lost.
	dbFresh bool
	// rejoining are the groups taken up from the object store's records
	// at open, with the members to sync their rows back from.
	rejoining map[syncnode.GroupID][]grouprecord.Member
	// records keeps the groups' records in an object store.
	records *grouprecord.Keeper
	dht     *p2p.DHT
	reprov  *p2p.Reprovider
	service *blobproto.Service
	client  *blobproto.Client
	sync    *syncer.Syncer
	// handoffs moves shares between this node and the members.
	handoffs *handoff.Handoffs
	// disc turns rows' blob refs into signposts and grants, and runs the
	// server fetcher.
	disc *discovery.Discovery

	// retr fetches blobs: locates holders, shares transfers, judges.
	retr *retrieval.Retriever

	// work is the node's goroutines and public calls, which Close stops
	// and waits for; ctx ends when Close begins.
	work *workgroup.Group
	ctx  context.Context

	// custody keeps the copies held: locks, pins, eviction, scrubbing.
	custody *custody.Custody
	// collector collects blobs that rows no longer reference.
	collector *collect.Collector
}

// blobStore is what a node needs of its blob store: a blobstore.Store
// it closes, that knows when each blob was stored.
type blobStore interface {
	blobstore.Store
	ModTime(ref syncnode.BlobRef) (time.Time, error)
	Close() error
}

// StoreInfo names the node's blob store and its last failure, if the
// store can fail apart from the node (an object store that is down).
func (n *Node) StoreInfo() (string, error) {
	if d, ok := n.blobs.(interface{ Describe() (string, error) }); ok {
		return d.Describe()
	}
	return "disk " + filepath.Join(n.cfg.DataDir, "blobs"), nil
}

// start runs the node's background work.
func (n *Node) start() {
	n.disc.Start()
	n.sync.Run()
	n.goRun(func() { n.reprov.Run(n.ctx) })
	n.goRun(func() { n.feed.Keep(n.ctx, n.groups.Sync, n.log) })
	n.handoffs.Start()
	n.custody.Start()
	n.goRun(func() { n.collector.Run(n.ctx) })
	n.records.RejoinAll(n.rejoining)
	for _, ai := range n.cfg.Bootstrap {
		n.goRun(func() {
			ctx, cancel := context.WithTimeout(n.ctx, n.cfg.IOTimeout)
			defer cancel()
			if err := n.h.Connect(ctx, ai); err != nil {
				n.log.Warn("bootstrap peer unreachable", "peer", ai.ID, "err", err)
			}
		})
	}
	// Every group's members get a first round now rather than after a period.
	for _, g := range n.sync.Groups() {
		if _, ok := n.rejoining[g]; ok {
			continue
		}
		n.goRun(func() { n.syncAll(g) })
	}
}

// ErrClosed reports a call made once the node was closing.
var ErrClosed = errors.New("node: closed")

// call starts a public call that Close then waits for; it fails with
// ErrClosed once Close has begun. The context returned ends with ctx or
// when Close begins; call done when the call ends.
func (n *Node) call(ctx context.Context) (context.Context, func(), error) {
	ctx, done, err := n.work.Enter(ctx)
	if err != nil {
		return ctx, nil, ErrClosed
	}
	return ctx, done, nil
}

// goRun runs fn in a goroutine that Close waits for; once Close has begun
// it runs nothing.
func (n *Node) goRun(fn func()) { n.work.Go(fn) }

// syncAll runs a round of g with every member, connecting as needed.
func (n *Node) syncAll(g syncnode.GroupID) {
	if err := n.SyncNow(g); err != nil {
		n.log.Debug("first rounds failed", "group", g, "err", err)
	}
}

// SyncNow runs a round of group g with every other member, connecting as
// needed, and returns the errors of the rounds that failed.
func (n *Node) SyncNow(g syncnode.GroupID) error {
	_, done, err := n.call(context.Background())
	if err != nil {
		return err
	}
	defer done()
	return n.sync.SyncAll(n.ctx, g, 4*n.cfg.IOTimeout)
}

// Close stops the node's work, waits for it, and closes its host and
// stores.
func (n *Node) Close() error {
	n.work.Stop()
	n.conn.Close()
	n.disc.Close()
	n.retr.Close()
	n.custody.Close()
	n.sync.Close()
	n.handoffs.Close()
	n.records.Close()
	n.service.Close()
	n.sayGoodbye()
	n.work.Wait()
	return errors.Join(n.dht.Close(), n.h.Close(), n.blobs.Close(), n.db.Close())
}

// sayGoodbye closes every connection, so that peers learn at once that
// this node is gone (QUIC sends its close frames, TCP its FIN) instead of
// at their next stream or their idle timeout; a node started again on the
// same identity is then dialled afresh.
func (n *Node) sayGoodbye() {
	for _, c := range n.h.Network().Conns() {
		c.Close()
	}
}

// ID returns the node's peer ID.
func (n *Node) ID() peer.ID { return n.h.ID() }

// Addrs returns the node's listen addresses, with its peer ID.
func (n *Node) Addrs() []ma.Multiaddr {
	out := make([]ma.Multiaddr, 0, len(n.h.Addrs()))
	for _, a := range n.h.Addrs() {
		out = append(out, a.Encapsulate(ma.StringCast("/p2p/"+n.h.ID().String())))
	}
	return out
}

// AddrInfo returns how other nodes reach this one.
func (n *Node) AddrInfo() peer.AddrInfo { return peer.AddrInfo{ID: n.h.ID(), Addrs: n.h.Addrs()} }

// Connect dials a peer.
func (n *Node) Connect(ctx context.Context, ai peer.AddrInfo) error { return n.h.Connect(ctx, ai) }

// PutBlob stores the bytes of r as a blob and returns its ref and size; the
// blob is provided in the DHT. If rows already reference it, this node —
// its origin — is granted the creator's shares before the blob can be
// evicted (a blob is not evictable until it is in the LRU table).
func (n *Node) PutBlob(ctx context.Context, r io.Reader) (blobstore.Info, error) {
	ctx, done, err := n.call(ctx)
	if err != nil {
		return blobstore.Info{}, err
	}
	defer done()
	info, err := n.blobs.Put(ctx, r, syncnode.BlobRef{})
	if err != nil {
		return info, err
	}
	if err := n.handoffs.GrantHeld(info.Ref); err != nil {
		return info, fmt.Errorf("node: stored %s, but its creator shares were not granted: %w", info.Ref, err)
	}
	n.custody.Restored(info.Ref)
	n.disc.Announce(info.Ref)
	n.custody.Touch(info.Ref, time.Now(), info.Size)
	n.custody.EvictSoon()
	n.blobEvent(feed.BlobHeld, info.Ref, info.Size, "")
	return info, nil
}

// OpenBlob opens a stored blob for reading at any offset.
func (n *Node) OpenBlob(ref syncnode.BlobRef) (blobstore.Reader, error) {
	r, err := n.store.Open(ref)
	if err == nil {
		n.custody.Touch(ref, time.Now(), r.Size())
	}
	return r, err
}

// StatBlob describes a stored blob.
func (n *Node) StatBlob(ref syncnode.BlobRef) (blobstore.Info, error) { return n.blobs.Stat(ref) }

// HasBlob reports whether the node holds ref, whole and verified.
func (n *Node) HasBlob(ref syncnode.BlobRef) bool { return n.holds(ref) }

func (n *Node) holds(ref syncnode.BlobRef) bool { return blobstore.Holds(n.blobs, ref) }

// BlobShares returns this device's ownership shares of ref by syncgroup.
func (n *Node) BlobShares(ref syncnode.BlobRef) (map[syncnode.GroupID]int, error) {
	return n.ledger.Shares(ref)
}

// Signpost returns what this node knows of where ref is.
func (n *Node) Signpost(ref syncnode.BlobRef) (signpost.Signpost, error) {
	return n.signposts.Get(ref)
}

// ListBlobs calls fn for every stored blob.
func (n *Node) ListBlobs(fn func(blobstore.Info) error) error { return n.blobs.List(fn) }

// RemoveBlob deletes a stored blob, unless this device holds shares of it
// (or has some in escrow, or is taking them), or the user pinned it here:
// then the error is a *HeldError, which names what holds the blob and what
// would release it, and matches ErrPinned or ErrUserPinned; the blob
// stays. See RemoveBlobWith.
func (n *Node) RemoveBlob(ref syncnode.BlobRef) error { return n.RemoveBlobWith(ref, RemoveOptions{}) }

// UploadStats returns the blob service's counters: uploads running and
// queued, bytes sent.
func (n *Node) UploadStats() blobproto.ServiceStats { return n.service.Stats() }
