package node

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/s3store"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/internal/blobproto"
	"github.com/syncnode/syncnode/internal/collect"
	"github.com/syncnode/syncnode/internal/connectivity"
	"github.com/syncnode/syncnode/internal/custody"
	"github.com/syncnode/syncnode/internal/dhtstore"
	"github.com/syncnode/syncnode/internal/discovery"
	"github.com/syncnode/syncnode/internal/grouprecord"
	"github.com/syncnode/syncnode/internal/handoff"
	"github.com/syncnode/syncnode/internal/journal"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/nodeaccess"
	"github.com/syncnode/syncnode/internal/packindex"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/internal/signposting"
	"github.com/syncnode/syncnode/internal/syncer"
	"github.com/syncnode/syncnode/internal/takeup"
	"github.com/syncnode/syncnode/internal/workgroup"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// Open opens (creating if needed) the node's data directory, starts its
// host, DHT, sync, share service and server fetcher, and loads its
// syncgroups. Close stops it all.
func Open(cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Log}
	n.work = workgroup.New()
	n.ctx = n.work.Context()
	var opened closers
	defer func() {
		if err != nil {
			n.work.Stop()
			opened.closeAll()
		}
	}()
	if err := n.openStores(&opened); err != nil {
		return nil, err
	}
	if err := n.openNetwork(&opened); err != nil {
		return nil, err
	}
	if err := n.openFetching(); err != nil {
		return nil, err
	}
	if err := n.recoverState(); err != nil {
		return nil, err
	}
	if err := n.conn.Follow(); err != nil {
		return nil, err
	}
	if cfg.Access != nil {
		*cfg.Access = nodeaccess.Access{Ledger: n.ledger, Host: n.h}
	}
	n.start()
	return n, nil
}

// closers are what Open has opened so far, to close if it fails.
type closers []func() error

func (c *closers) add(f func() error) { *c = append(*c, f) }

// closeAll closes them in reverse order.
func (c closers) closeAll() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

// openStores opens the blob store and the database with the stores kept
// in it.
func (n *Node) openStores(opened *closers) (err error) {
	dbDir := filepath.Join(n.cfg.DataDir, "db")
	if _, err := os.Stat(dbDir); errors.Is(err, fs.ErrNotExist) {
		n.dbFresh = true
	}
	if n.db, err = kv.Open(dbDir, n.log); err != nil {
		return err
	}
	opened.add(n.db.Close)
	// The blob store after the database, which keeps its pack index, and
	// closed before it.
	if n.blobs, err = n.openBlobStore(); err != nil {
		return err
	}
	opened.add(n.blobs.Close)
	cc := custody.Config{BlobBudget: n.cfg.BlobBudget, ScrubPeriod: n.cfg.ScrubPeriod, ScrubMaxRate: n.cfg.ScrubMaxRate,
		RestoreTimeout: 10 * n.cfg.IOTimeout}
	if n.custody, err = custody.New(cc, n.blobs, n.db, custodyRules{n}, custodyPeers{n}, n.log); err != nil {
		return err
	}
	opened.add(func() error { n.custody.Close(); return nil })
	n.store = n.custody.Watched()
	n.signposts = signpost.NewStore(n.db)
	n.journal = journal.New(n.db, n.signposts.LegacyAttempts, n.log)
	n.ledger = ownership.NewLedger(n.db)
	n.groups = syncgroup.NewStore(n.db)
	return nil
}

// OpenStopped opens the database and the disk blob store that a node not
// running keeps in dataDir, as Open would find them (small blobs packed,
// their index in the database), for tools and tests that look at or
// change what a stopped node keeps. Close the store, then the database.
func OpenStopped(dataDir string, log *slog.Logger) (*badger.DB, *blobstore.Disk, error) {
	db, err := kv.Open(filepath.Join(dataDir, "db"), log)
	if err != nil {
		return nil, nil, err
	}
	bs, err := blobstore.OpenDisk(filepath.Join(dataDir, "blobs"), log, blobstore.WithPacks(packindex.New(db)))
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, bs, nil
}

// openBlobStore opens the blob store: DataDir/blobs, packing small blobs
// with their index in the database, or the bucket of
// Config.S3 with DataDir/blobs as its staging directory and this node's
// peer ID as its owner.
func (n *Node) openBlobStore() (blobStore, error) {
	dir := filepath.Join(n.cfg.DataDir, "blobs")
	if n.cfg.S3 == nil {
		return blobstore.OpenDisk(dir, n.log, blobstore.WithPacks(packindex.New(n.db)))
	}
	key, err := p2p.LoadIdentity(filepath.Join(n.cfg.DataDir, "identity.key"))
	if err != nil {
		return nil, err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("node: identity: %w", err)
	}
	c := *n.cfg.S3
	c.Owner, c.Staging = id.String(), dir
	return s3store.Open(n.ctx, c, n.log)
}

// openNetwork starts the host, the DHT and the three protocols: sync
// (with the groups restored), blob transfer and shares.
func (n *Node) openNetwork(opened *closers) (err error) {
	hc := p2p.DefaultHostConfig()
	hc.IdentityFile = filepath.Join(n.cfg.DataDir, "identity.key")
	hc.ListenAddrs = n.cfg.ListenAddrs
	hc.Gater = n.cfg.Gater
	cc := connectivity.Config{IOTimeout: n.cfg.IOTimeout, LAN: !n.cfg.NoLAN,
		RelayMaxReservations: n.cfg.RelayMaxReservations, RelayMaxCircuits: n.cfg.RelayMaxCircuits}
	if n.conn, err = connectivity.New(cc, n.log); err != nil {
		return err
	}
	opened.add(n.conn.Close)
	hc.AddrsFactory = n.conn.HostAddrs
	hc.RelayCandidates = n.conn.RelayCandidates
	if n.h, err = p2p.NewHost(hc); err != nil {
		return err
	}
	opened.add(n.h.Close)
	// Provider records on disk: a server providing a library holds them
	// there, not in memory.
	if n.dht, err = p2p.NewDHT(n.h, n.log, p2p.DHTStore(dhtstore.New(n.db))); err != nil {
		return err
	}
	opened.add(n.dht.Close)
	if n.feed, err = feed.Open(n.db, n.h.ID(), feed.Config{Retain: n.cfg.FeedRetain, Enter: n.enterRead}); err != nil {
		return err
	}
	n.groups.SetJournal(n.feed)

	sc := syncer.Config{Interval: n.cfg.SyncInterval, IOTimeout: n.cfg.IOTimeout, Store: n.groups}
	if n.sync, err = syncer.New(n.h, sc, n.log, hooks{n}); err != nil {
		return err
	}
	opened.add(func() error { n.sync.Close(); return nil })
	n.book = signposting.New(n.h.ID(), n.signposts, n.sync, n.conn.Addrs, func(p peer.ID, as []string) { connectivity.AddAddrs(n.h, p, as) }, n.log)
	n.collector, err = collect.New(collect.Config{Grace: n.cfg.CollectGrace}, collect.Deps{Self: n.h.ID(), DB: n.db,
		Groups: n.sync, Signposts: n.signposts, Ledger: n.ledger, Custody: n.custody,
		Busy: func(ref syncnode.BlobRef) bool { return n.retr.InFlight(ref) }, Collected: n.collected,
		Revive: func(ref syncnode.BlobRef, gs []syncnode.GroupID) (bool, error) { return n.handoffs.Revive(ref, gs) }, Log: n.log})
	if err != nil {
		return err
	}
	n.book.SetUnreferenced(n.collector.Unreferenced)
	loaded, err := n.groups.Load(n.h.ID(), time.Minute)
	if err != nil {
		return err
	}
	for _, l := range loaded {
		n.sync.Restore(l.Group, l.Prio)
	}

	if n.service, err = blobproto.NewService(n.h, n.store, blobproto.ServiceConfig{IOTimeout: n.cfg.IOTimeout, Signposts: n.book.For, Access: n.book.MayServe}, n.log); err != nil {
		return err
	}
	opened.add(func() error { n.service.Close(); return nil })
	clc := blobproto.ClientConfig{IOTimeout: n.cfg.IOTimeout, Relayed: n.cfg.Relayed, RelayRate: n.cfg.RelayRate, Punch: n.conn.PunchNow}
	if n.client, err = blobproto.NewClient(n.h, n.blobs, clc, n.log); err != nil {
		return err
	}
	return n.conn.Start(n.h, n.sync, func(g syncnode.GroupID) { n.goRun(func() { n.syncAll(g) }) })
}

// openFetching sets up fetches: the gate, the server fetcher and the
// reprovider.
func (n *Node) openFetching() (err error) {
	rc := retrieval.Config{IOTimeout: n.cfg.IOTimeout, MaxFetches: n.cfg.MaxFetches, Route: n.noteRoute}
	if n.retr, err = retrieval.New(rc, n.h, n.blobs, n.client, n.dht, n.book, keeper{n}, n.log); err != nil {
		return err
	}
	hc := handoff.Config{IOTimeout: n.cfg.IOTimeout, EscrowWait: n.cfg.EscrowWait, Note: n.noteHandoff, Moved: n.sharesMoved, Room: n.room}
	if n.handoffs, err = handoff.New(hc, n.h, n.ledger, n.book, n.sync, n.custody, n.store, n.retr, n.log); err != nil {
		return err
	}
	n.reprov = p2p.NewReprovider(n.dht.Provide, func() bool { return n.dht.RoutingTableSize() > 0 }, discovery.Provided{Book: n.book, HeldRefs: n.custody.HeldRefs, Holds: n.holds}, p2p.ReprovideInterval, 4, n.log)
	n.disc, err = discovery.New(*n.cfg.Fetcher, discovery.Deps{Self: n.h.ID(), Book: n.book, Signposts: n.signposts,
		Journal: n.journal, Ledger: n.ledger, Store: n.blobs, Groups: n.sync, Grants: n.handoffs, Fetches: n.retr,
		Announcer: n.reprov, AfterScan: n.custody.EvictSoon, Referenced: n.collector.ReferencedAll, Room: n.room}, n.log)
	return err
}

// recoverState takes up what the node held when it stopped: the fetch
// queue is restored, a peer that connects is a holder back, and the store
// is walked in the background (takeUp).
func (n *Node) recoverState() error {
	var err error
	n.records = grouprecord.New(n.blobs, n.h, n.sync, n.cfg.IOTimeout, func(syncnode.GroupID) { n.conn.PublishAddrs(true) }, n.log)
	if n.rejoining, err = n.records.TakeUp(); err != nil {
		n.log.Error("groups not taken up from the object store's records", "err", err)
	}
	if n.dbFresh {
		// Held before the database was lost: who created each blob, and
		// who keeps its shares, the group tells (see reclaim).
		if err := n.blobs.List(func(i blobstore.Info) error { return n.ledger.MarkRecovered(i.Ref) }); err != nil {
			return err
		}
	}
	n.takingUp.Store(true)
	n.goRun(n.takeUp)
	for _, g := range n.sync.Groups() {
		if err := n.setName(g); err != nil {
			n.log.Warn("name not written into the membership", "group", g, "err", err)
		}
	}
	n.conn.PublishAddrs(false)
	if err := n.disc.Requeue(); err != nil {
		n.log.Error("fetch queue not restored at open", "err", err)
	}
	n.h.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) {
			p2p.ProbeOthers(n.ctx, n.h, c)
			n.retr.Arrived()
			n.disc.HolderBack(c.RemotePeer())
		},
		DisconnectedF: func(nw network.Network, c network.Conn) {
			if nw.Connectedness(c.RemotePeer()) != network.Connected {
				n.lastSeen.Store(c.RemotePeer(), time.Now())
			}
		},
	})
	return nil
}

// takeUp walks the store in the background: every blob is granted what a
// stop cut short, announced and in the LRU table, and the shares are
// checked against the copies.
func (n *Node) takeUp() {
	defer n.takingUp.Store(false)
	res, err := takeup.Run(n.ctx, takeup.Deps{Store: n.blobs, Grant: n.handoffs.GrantHeld, Announce: n.disc.Announce,
		Lock: n.custody.Lock, Know: n.custody.Know, CheckShares: n.handoffs.CheckShares, Starts: n.cfg.takeUpStarts, Log: n.log})
	if err != nil && n.ctx.Err() == nil {
		n.log.Error("store not wholly taken up after the open", "err", err)
	}
	n.log.Info("store taken up", "blobs", res.Blobs, "took", res.Took)
}
