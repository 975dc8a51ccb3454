// Package ownsim is a seeded simulation of the ownership protocol over the
// real node code: a phone, a laptop, a leaf and a server on loopback share
// one syncgroup while a schedule drawn from the seed puts blobs and writes
// rows naming them in either order, fetches, syncs, evicts under one-byte
// budgets, removes blobs as a user does, deletes or overwrites the rows so
// that they name their blobs no more, stops nodes with work in flight and
// restarts them, cuts and heals the network, and has the laptop or the
// leaf leave the group, or the admin (the phone) eject them, and invite
// them back. After every step it checks the invariants:
//
//   - I1: a blob that has been stored while a live row referenced it always
//     has a copy somewhere, as long as the row lives;
//   - I2: the shares of a (blob, group) that members hold never exceed 2
//     (a member that left or was ejected holds none that count);
//   - I3: a node that holds shares of a blob holds a verified copy, unless
//     it is restoring that copy;
//
// and at the end, once the network is healed, every node is up and back
// in the group and the work has settled: every such blob whose row lives
// is on the server with both its shares, and no device still holds shares
// of it (I6); and every blob whose row was deleted or overwritten has
// been collected: no node holds shares of it or a copy.
// The invariants are documented in docs/durability.md.
//
// The schedule is a function of the seed alone, so a failing seed replays
// the same operations; the timing of the nodes' own background work (sync
// rounds, fetches, hand-offs) is not, which is how races are found.
package ownsim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/s3store"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/harness/netsplit"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/nodeaccess"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/ownership"
)

// Config is one simulated run.
type Config struct {
	Seed uint64
	// Steps is how many operations the schedule draws (default 40).
	Steps int
	// Blobs is how many blobs the run writes (default 4).
	Blobs int
	// Grace is every node's collection grace (default 400 ms).
	Grace time.Duration
	// Settle bounds the wait at the end for the work to settle (default
	// 30 s).
	Settle time.Duration
	// Dir holds the nodes' data directories.
	Dir string
	// Trace, if not nil, receives one line per step.
	Trace io.Writer
	// Logs, if not nil, receives the nodes' logs (each line names its
	// node); by default they are dropped.
	Logs io.Writer
	// ServerStore, if not nil, keeps the server's blobs on an object
	// store, its endpoint that of Faults, which the schedule then has
	// fail (503 on every request), cut a read short, and heal.
	ServerStore *s3store.Config
	Faults      StoreFaults
}

// StoreFaults drives the faults between the server and its object store
// (see package s3faults).
type StoreFaults interface {
	// Addr is the endpoint the server uses; Direct, the store's own.
	Addr() string
	Direct() string
	// CutReads has the next n ranged reads end halfway, the store
	// unavailable after each.
	CutReads(n int)
	// SetUnavailable has every request fail with 503, or pass.
	SetUnavailable(down bool)
}

// Report counts what a run did and checked.
type Report struct {
	Seed uint64
	// Steps run and invariant checks made (one check is one invariant
	// for one blob, or for one node and one blob).
	Steps, Checks int
	// Ops counts the operations run, by name.
	Ops map[string]int
	// Protected is how many blobs were stored while referenced (and so
	// must never be lost).
	Protected int
	// Collected is how many blobs had their row deleted or overwritten,
	// and were collected everywhere by the end.
	Collected int
	// Settling is how long the end took to settle.
	Settling time.Duration
}

// ErrInvariant reports a broken invariant.
var ErrInvariant = errors.New("ownsim: invariant broken")

// The nodes, by index.
const (
	phone = iota
	laptop
	leaf
	server
	numNodes
)

var names = [numNodes]string{"phone", "laptop", "leaf", "server"}
var devTypes = [numNodes]syncnode.DevType{syncnode.Normal, syncnode.Normal, syncnode.Leaf, syncnode.Server}

// member is one simulated node: up, or down with what it held when it
// stopped.
type member struct {
	name  string
	cfg   node.Config
	gater *netsplit.Gater
	id    peer.ID
	n     *node.Node // nil while down
	// acc is n's ledger and host (cfg.Access points to it).
	acc nodeaccess.Access
	// while down: its copies and shares as its stores keep them
	held   map[syncnode.BlobRef]bool
	shares map[syncnode.BlobRef]map[syncnode.GroupID]int
	// out: it left the group or was ejected, and is not back yet.
	out bool
}

// idx returns m's index among the nodes.
func (m *member) idx() int {
	for i, n := range names {
		if n == m.name {
			return i
		}
	}
	return -1
}

type blob struct {
	data   []byte
	ref    syncnode.BlobRef
	origin int
	put    bool // stored on its origin once
	row    bool // the row naming it is written
	// unref: its row was deleted or overwritten, so it names the blob no
	// more; it is never written again, and the blob is to be collected.
	unref bool
	// again: a row named it again after its row went (nameAgain), which
	// alone says whether it is protected: a copy elsewhere may be
	// collected before that row reaches it.
	again bool
	// late: put on its origin only after its row was gone; the origin may
	// keep that copy, as any blob put that no row names.
	late bool
	// protected: stored while a live row referenced it; never to be lost
	// while the row lives.
	protected bool
	idx       int
}

// key is the key of the row naming b.
func (b *blob) key() string { return fmt.Sprintf("sim/%d", b.idx) }

// nameOf names the node whose ID is id.
func (s *sim) nameOf(id peer.ID) string {
	for _, m := range s.ms {
		if m.id == id {
			return m.name
		}
	}
	return id.String()
}

type sim struct {
	cfg   Config
	rng   *rand.Rand
	ms    [numNodes]*member
	blobs []*blob
	g     syncnode.GroupID
	cut   netsplit.Partition
	split bool
	rep   Report
	trace []string
}

// Run runs one simulation. It returns an error wrapping ErrInvariant, with
// the steps that led there, if an invariant broke.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Steps <= 0 {
		cfg.Steps = 40
	}
	if cfg.Blobs <= 0 {
		cfg.Blobs = 4
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 400 * time.Millisecond
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 30 * time.Second
	}
	s := &sim{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x0e5e)), rep: Report{Seed: cfg.Seed, Ops: map[string]int{}}}
	defer s.closeAll()
	if err := s.setup(ctx); err != nil {
		return s.rep, err
	}
	for i := range cfg.Steps {
		if err := ctx.Err(); err != nil {
			return s.rep, err
		}
		op := s.step(ctx)
		s.rep.Steps++
		s.rep.Ops[op]++
		s.log(fmt.Sprintf("step %d: %s", i, op))
		if err := s.check(); err != nil {
			return s.rep, s.fail(err)
		}
	}
	start := time.Now()
	if err := s.settle(ctx); err != nil {
		return s.rep, s.fail(err)
	}
	s.rep.Settling = time.Since(start)
	for _, b := range s.blobs {
		if b.protected {
			s.rep.Protected++
		}
		if b.unref {
			s.rep.Collected++
		}
	}
	return s.rep, nil
}

func (s *sim) log(line string) {
	s.trace = append(s.trace, line)
	if s.cfg.Trace != nil {
		fmt.Fprintln(s.cfg.Trace, line)
	}
}

func (s *sim) fail(err error) error {
	return fmt.Errorf("%w: seed %d: %v\nsteps:\n  %s", ErrInvariant, s.cfg.Seed, err, strings.Join(s.trace, "\n  "))
}

func (s *sim) setup(ctx context.Context) error {
	fc := fetcher.Config{}
	fc.BaseDelay, fc.Jitter, fc.MaxShift = 20*time.Millisecond, 20*time.Millisecond, 4
	fc.FirstScan, fc.ScanInterval = 100*time.Millisecond, 500*time.Millisecond
	for i := range numNodes {
		// A port of the system's choosing at every start: seeds run side
		// by side, and a port freed for later use could be taken meanwhile.
		// Peers learn the new address when the node starts (see start).
		addr := "/ip4/127.0.0.1/tcp/0"
		m := &member{name: names[i], gater: s.cut.Gater()}
		m.cfg = node.Config{DataDir: filepath.Join(s.cfg.Dir, fmt.Sprintf("%s-%d", names[i], s.cfg.Seed)),
			ListenAddrs: []string{addr}, SyncInterval: 200 * time.Millisecond, IOTimeout: 2 * time.Second,
			Fetcher: &fc, Gater: m.gater, ScrubPeriod: -1, Log: slog.New(slog.DiscardHandler), NoLAN: true,
			CollectGrace: s.cfg.Grace}
		m.cfg.Access = &m.acc
		if s.cfg.Logs != nil {
			m.cfg.Log = slog.New(slog.NewTextHandler(s.cfg.Logs, nil)).With("node", names[i])
		}
		if devTypes[i] != syncnode.Server {
			m.cfg.BlobBudget = 1 // every blob it may evict goes
		} else if s.cfg.ServerStore != nil {
			c := *s.cfg.ServerStore
			c.Endpoint = s.cfg.Faults.Addr()
			m.cfg.S3 = &c
		}
		s.ms[i] = m
		if err := s.start(m); err != nil {
			return err
		}
	}
	admin := s.ms[phone].n
	spec, err := admin.CreateGroup("sim", []string{"sim/"}, true, devTypes[phone])
	if err != nil {
		return err
	}
	s.g = spec.ID
	for i := laptop; i < numNodes; i++ {
		inv, err := admin.Invite(s.g, s.ms[i].id, devTypes[i], time.Hour)
		if err != nil {
			return err
		}
		if _, err := s.ms[i].n.JoinGroup(ctx, inv); err != nil {
			return fmt.Errorf("ownsim: join: %w", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range s.ms {
		for len(m.n.Members(s.g)) != numNodes {
			if time.Now().After(deadline) {
				return errors.New("ownsim: membership did not reach every node")
			}
			m.n.SyncNow(s.g)
			time.Sleep(5 * time.Millisecond)
		}
	}
	for range s.cfg.Blobs {
		// Three in four packed (at most blobstore.PackMax), the rest
		// files of their own, just larger.
		size := 1 + s.rng.IntN(48<<10)
		if s.rng.IntN(4) == 0 {
			size = blobstore.PackMax + 1 + s.rng.IntN(16<<10)
		}
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(s.rng.Uint32())
		}
		h, err := hashOf(data)
		if err != nil {
			return err
		}
		s.blobs = append(s.blobs, &blob{data: data, ref: h, origin: s.rng.IntN(server), idx: len(s.blobs)})
	}
	return nil
}

// hashOf returns the ref of data, as a put would.
func hashOf(data []byte) (syncnode.BlobRef, error) {
	m := blobstore.NewMem()
	info, err := m.Put(context.Background(), bytes.NewReader(data), syncnode.BlobRef{})
	return info.Ref, err
}

func (s *sim) start(m *member) error {
	n, err := node.Open(m.cfg)
	if err != nil {
		return fmt.Errorf("ownsim: open %s: %w", m.name, err)
	}
	m.gater.SetSelf(n.ID())
	m.id, m.n, m.held, m.shares = n.ID(), n, nil, nil
	// Partitions and peers' addresses: every up node knows every other.
	for _, o := range s.ms {
		if o != nil && o != m && o.n != nil {
			m.acc.Host.Peerstore().AddAddrs(o.id, o.n.AddrInfo().Addrs, time.Hour)
			o.acc.Host.Peerstore().AddAddrs(m.id, n.AddrInfo().Addrs, time.Hour)
		}
	}
	return nil
}

// stop closes m with whatever it was doing in flight, and reads what its
// stores keep.
func (s *sim) stop(m *member) error {
	err := m.n.Close()
	m.n = nil
	m.held, m.shares = map[syncnode.BlobRef]bool{}, map[syncnode.BlobRef]map[syncnode.GroupID]int{}
	db, bs, oerr := s.openStores(m)
	if oerr != nil {
		return errors.Join(err, oerr)
	}
	lerr := bs.List(func(i blobstore.Info) error { m.held[i.Ref] = true; return nil })
	if cerr := bs.Close(); lerr == nil {
		lerr = cerr
	}
	if lerr != nil {
		db.Close()
		return errors.Join(err, lerr)
	}
	serr := ownership.NewLedger(db).Scan(func(ref syncnode.BlobRef, sh map[syncnode.GroupID]int) error {
		m.shares[ref] = sh
		return nil
	})
	return errors.Join(err, serr, db.Close())
}

// blobLister lists a stopped node's blobs.
type blobLister interface {
	List(func(blobstore.Info) error) error
	Close() error
}

// openStores opens the database and the blob store of stopped node m, as
// it would find them at its next start: its disk (small blobs packed,
// their index in the database), or its bucket looked at past the faults.
func (s *sim) openStores(m *member) (*badger.DB, blobLister, error) {
	log := slog.New(slog.DiscardHandler)
	if m.cfg.S3 == nil {
		return node.OpenStopped(m.cfg.DataDir, log)
	}
	db, err := kv.Open(filepath.Join(m.cfg.DataDir, "db"), log)
	if err != nil {
		return nil, nil, err
	}
	c := *m.cfg.S3
	c.Endpoint, c.Owner, c.Staging = s.cfg.Faults.Direct(), m.id.String(), filepath.Join(s.cfg.Dir, fmt.Sprintf("look-%s-%d", m.name, s.cfg.Seed))
	bs, err := s3store.Open(context.Background(), c, log)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, bs, nil
}

func (s *sim) closeAll() {
	for _, m := range s.ms {
		if m != nil && m.n != nil {
			m.n.Close()
		}
	}
}

// up returns the members that are up.
func (s *sim) up() []*member {
	var out []*member
	for _, m := range s.ms {
		if m.n != nil {
			out = append(out, m)
		}
	}
	return out
}

// rowValue is the value of the row naming b.
func rowValue(b *blob) []byte {
	v, _ := msgpack.Marshal(map[string]any{"photo": b.ref})
	return v
}

func (s *sim) hosts() []host.Host {
	out := make([]host.Host, numNodes)
	for i, m := range s.ms {
		if m.n != nil {
			out[i] = m.acc.Host
		}
	}
	return out
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120] + "…"
	}
	return msg
}
