// Package hostile is a seeded simulation of a group of honest nodes (an
// admin phone, a laptop and a server, real nodes on loopback) with one
// hostile member among them: a bare libp2p host that the admin invited,
// that joined with the real join protocol, and that then speaks
// syncnode's wire format itself. A schedule drawn from the seed mixes
// honest operations (blobs and the rows naming them, plain rows, deletes,
// fetches, rounds, evictions, a node cut off and healed) with well-formed
// lies on every protocol (see attack), and has the hostile member leave or
// the admin eject it mid-run, after which it goes on lying.
//
// After every step the run checks I1–I3 over the honest nodes, that the
// hostile member received no row written after its ejection, that rows it
// could not legally write are stored nowhere, that blobs no row references
// have no signposts and that only the server is taken for a server, and
// that the rows stored stay within what was legally written. At the end a
// fresh honest row must reach every honest node within a bound, the honest
// nodes must converge on the same rows (the honest ones as written, none
// of the hostile member's after it was out), and the heap must not have
// exploded.
//
// The schedule is a function of the seed alone; the nodes' own timing is
// not.
package hostile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"
	"lukechampine.com/blake3"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/harness/netsplit"
	"github.com/syncnode/syncnode/internal/nodeaccess"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
)

// Config is one simulated run.
type Config struct {
	Seed uint64
	// Steps is how many operations the schedule draws (default 40).
	Steps int
	// Dir holds the honest nodes' data directories.
	Dir string
	// Trace, if not nil, receives one line per step.
	Trace io.Writer
	// NoMint keeps the hostile member from offering shares it does not
	// hold, which honest acceptors take (a known bug): set it to look for
	// other failures.
	NoMint bool
}

// Report counts what a run did.
type Report struct {
	Seed uint64
	// Steps run, hostile steps among them, and invariant checks made.
	Steps, Attacks, Checks int
	// Ops counts the operations run, by name.
	Ops map[string]int
	// Spread is how long the fresh row at the end took to reach every
	// honest node.
	Spread time.Duration
	// Minted counts the blobs whose honest shares went over two for a
	// while, because the hostile member offered shares it never had; the
	// run fails unless they are back to two at most by its end.
	Minted int
}

// ErrInvariant reports a broken invariant.
var ErrInvariant = errors.New("hostile: invariant broken")

// The honest nodes, by index.
const (
	phone = iota // the admin
	laptop
	server
	numNodes
)

var (
	names    = [numNodes]string{"phone", "laptop", "server"}
	devTypes = [numNodes]syncnode.DevType{syncnode.Normal, syncnode.Normal, syncnode.Server}
)

// spreadBound is how long a fresh honest row may take to reach every honest
// node at the end, by pushes and periodic rounds alone.
const spreadBound = 10 * time.Second

type blob struct {
	data      []byte
	origin    int // the honest node that puts it and writes its row
	ref       syncnode.BlobRef
	put, row  bool
	protected bool // stored while a live honest row named it
}

type sim struct {
	cfg Config
	rng *rand.Rand
	ns  [numNodes]*node.Node
	ids [numNodes]peer.ID
	// hosts are the honest nodes' hosts (Config.Access), for addresses
	// and partitions.
	hosts [numNodes]nodeaccess.Access
	cut   netsplit.Partition
	g     syncnode.GroupID
	bad   *peerHost
	blobs []*blob
	// honest: the version each honest key must end with: the winner of
	// the honest writes to it.
	honest map[string]syncgroup.Row
	// legal: keys the hostile member could write; illegal: rows it sent
	// that no node may store (by key); invented: refs no row names.
	legal, illegal map[string]bool
	// intruders are peers the hostile member tried to admit.
	intruders []peer.ID
	invented  []syncnode.BlobRef
	// inv is the invitation the hostile member joined with; readmitted,
	// an admin that took it back once the member was expelled.
	inv        syncgroup.Invitation
	readmitted string
	// out: the hostile member is out, as every honest node knows since
	// outAt; after: honest writes made since then (writer and sequence).
	out     bool
	outAt   time.Time
	after   map[string]bool
	ejectAt int
	// minted are the blobs whose honest shares the hostile member's
	// offers took over two (see Report.Minted).
	minted map[syncnode.BlobRef]bool
	heap0  uint64
	rep    Report
	trace  []string
}

// Run runs one simulation. It returns an error wrapping ErrInvariant, with
// the steps that led there, if an invariant broke.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Steps <= 0 {
		cfg.Steps = 40
	}
	s := &sim{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x4057)), honest: map[string]syncgroup.Row{},
		legal: map[string]bool{}, illegal: map[string]bool{}, after: map[string]bool{}, rep: Report{Seed: cfg.Seed, Ops: map[string]int{}}}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.heap0 = ms.HeapAlloc
	defer s.closeAll()
	if err := s.setup(ctx); err != nil {
		return s.rep, err
	}
	s.ejectAt = cfg.Steps/2 + s.rng.IntN(cfg.Steps/2)
	for i := range cfg.Steps {
		if err := ctx.Err(); err != nil {
			return s.rep, err
		}
		var op string
		if i == s.ejectAt {
			op = s.expel(ctx)
		} else {
			op = s.step(ctx)
		}
		s.rep.Steps++
		s.rep.Ops[strings.SplitN(op, ":", 2)[0]]++
		s.log(fmt.Sprintf("step %d: %s", i, op))
		if err := s.check(); err != nil {
			return s.rep, s.fail(err)
		}
	}
	if err := s.finish(ctx); err != nil {
		return s.rep, s.fail(err)
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
		gater := s.cut.Gater()
		cfg := node.Config{DataDir: filepath.Join(s.cfg.Dir, fmt.Sprintf("%s-%d", names[i], s.cfg.Seed)),
			ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, SyncInterval: 200 * time.Millisecond, IOTimeout: 2 * time.Second,
			Fetcher: &fc, Gater: gater, ScrubPeriod: -1, Log: slog.New(slog.DiscardHandler), NoLAN: true}
		if devTypes[i] != syncnode.Server {
			cfg.BlobBudget = 1
		}
		cfg.Access = &s.hosts[i]
		n, err := node.Open(cfg)
		if err != nil {
			return fmt.Errorf("hostile: open %s: %w", names[i], err)
		}
		gater.SetSelf(n.ID())
		s.ns[i], s.ids[i] = n, n.ID()
	}
	for i, a := range s.ns {
		for _, b := range s.ns {
			if a != b {
				s.hosts[i].Host.Peerstore().AddAddrs(b.ID(), b.AddrInfo().Addrs, time.Hour)
			}
		}
	}
	admin := s.ns[phone]
	spec, err := admin.CreateGroup("hostile", []string{"sim/"}, true, syncnode.Normal)
	if err != nil {
		return err
	}
	s.g = spec.ID
	for i := laptop; i < numNodes; i++ {
		inv, err := admin.Invite(s.g, s.ids[i], devTypes[i], time.Hour)
		if err != nil {
			return err
		}
		if _, err := s.ns[i].JoinGroup(ctx, inv); err != nil {
			return fmt.Errorf("hostile: join: %w", err)
		}
	}
	// A second admin: the hostile member's changes compete with two.
	if _, err := admin.ChangeGroup(s.g, syncgroup.Change{Op: syncgroup.AddAdmin, Peer: s.ids[laptop]}); err != nil {
		return err
	}
	if s.bad, err = newPeerHost(s.g, 2*time.Second); err != nil {
		return err
	}
	s.bad.lyingHolder, s.bad.rightBytes = s.rng.IntN(2) == 0 && !s.cfg.NoMint, s.rng.IntN(2) == 0
	s.log(fmt.Sprintf("setup: the hostile member %s: lying holder %v, serves true bytes %v", s.bad.id(), s.bad.lyingHolder, s.bad.rightBytes))
	for i, n := range s.ns {
		s.bad.h.Peerstore().AddAddrs(n.ID(), n.AddrInfo().Addrs, time.Hour)
		s.hosts[i].Host.Peerstore().AddAddrs(s.bad.id(), s.bad.h.Addrs(), time.Hour)
	}
	inv, err := admin.Invite(s.g, s.bad.id(), syncnode.Normal, time.Hour)
	if err != nil {
		return err
	}
	s.inv = inv
	if err := s.bad.join(ctx, inv, admin.AddrInfo()); err != nil {
		return fmt.Errorf("hostile: the hostile member's join: %w", err)
	}
	if err := s.waitMembers(numNodes+1, 10*time.Second); err != nil {
		return err
	}
	for range 4 {
		data := make([]byte, 16<<10+s.rng.IntN(48<<10))
		for j := range data {
			data[j] = byte(s.rng.Uint32())
		}
		s.blobs = append(s.blobs, &blob{data: data, ref: refOf(data), origin: s.rng.IntN(numNodes)})
	}
	return nil
}

// refOf is the ref of data: its BLAKE3 hash.
func refOf(data []byte) syncnode.BlobRef { return syncnode.RefFromHash(blake3.Sum256(data)) }

// waitMembers waits until every honest node counts want members.
func (s *sim) waitMembers(want int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for _, n := range s.ns {
		for len(n.Members(s.g)) != want {
			if time.Now().After(deadline) {
				return fmt.Errorf("hostile: %s counts %d members, want %d", n.ID(), len(n.Members(s.g)), want)
			}
			n.SyncNow(s.g)
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

func (s *sim) closeAll() {
	for _, n := range s.ns {
		if n != nil {
			n.Close()
		}
	}
	if s.bad != nil {
		s.bad.h.Close()
	}
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	msg := err.Error()
	if len(msg) > 100 {
		msg = msg[:100] + "…"
	}
	return msg
}

// wrote notes an honest write: its expected end value, and, once the
// hostile member is out, that it must never reach it.
func (s *sim) wrote(r syncgroup.Row, err error) {
	if err != nil {
		return
	}
	if cur, ok := s.honest[r.Key]; !ok || syncgroup.Wins(r, cur) {
		s.honest[r.Key] = r
	}
	if s.out {
		s.after[fmt.Sprintf("%s/%d", r.Writer, r.Seq)] = true
	}
}

// step draws one operation and runs it: honest ones below 46, hostile
// ones above.
func (s *sim) step(ctx context.Context) string {
	op, i := s.rng.IntN(100), s.rng.IntN(numNodes)
	n, name := s.ns[i], names[i]
	b := s.blobs[s.rng.IntN(len(s.blobs))]
	key := fmt.Sprintf("sim/p%d", s.rng.IntN(12))
	switch {
	case op < 10: // a blob and the row naming it, on the blob's origin
		o := s.ns[b.origin]
		if b.row {
			return "put: skipped"
		}
		if _, err := o.PutBlob(ctx, bytes.NewReader(b.data)); err != nil {
			return fmt.Sprintf("put: blob on %s: %v", names[b.origin], err)
		}
		b.put = true
		v, _ := msgpack.Marshal(map[string]any{"photo": b.ref})
		r, err := o.PutRow(s.g, "sim/b/"+b.ref.String()[:12], v)
		s.wrote(r, err)
		b.row = err == nil
		return fmt.Sprintf("put: blob %s and its row on %s: %v", b.ref.String()[:12], names[b.origin], errString(err))
	case op < 18:
		v, _ := msgpack.Marshal(fmt.Sprintf("value %d", s.rng.Uint32()))
		r, err := n.PutRow(s.g, key, v)
		s.wrote(r, err)
		return fmt.Sprintf("write: %s on %s: %v", key, name, errString(err))
	case op < 22:
		if _, ok := s.honest[key]; !ok {
			return "delete: skipped"
		}
		r, err := n.DeleteRow(s.g, key)
		s.wrote(r, err)
		return fmt.Sprintf("delete: %s on %s: %v", key, name, errString(err))
	case op < 29:
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := n.FetchBlob(fctx, b.ref, node.FetchOptions{})
		return fmt.Sprintf("fetch: blob %s on %s: %v", b.ref.String()[:12], name, errString(err))
	case op < 36:
		return fmt.Sprintf("sync: on %s: %v", name, errString(n.SyncNow(s.g)))
	case op < 41:
		if i == server {
			return "evict: skipped"
		}
		rep, err := n.Evict()
		return fmt.Sprintf("evict: on %s: %d evicted, %v", name, len(rep.Evicted), errString(err))
	case op < 46:
		// One honest node cut off from the others (the hostile member
		// stays with them), or the cut healed.
		if i == phone || s.cutOff() {
			s.cut.Heal()
			return "heal: the network"
		}
		side := make([]int, numNodes)
		side[i] = 1
		hosts := make([]host.Host, numNodes)
		for k, a := range s.hosts {
			hosts[k] = a.Host
		}
		s.cut.Split(s.ids[:], hosts, side)
		return fmt.Sprintf("cut: %s off", name)
	}
	s.rep.Attacks++
	return s.attack(ctx, i)
}

// cutOff reports whether a node is cut off now.
func (s *sim) cutOff() bool {
	return !s.cut.Allowed(s.ids[phone], s.ids[laptop]) || !s.cut.Allowed(s.ids[phone], s.ids[server])
}

// expel ends the hostile member's membership: it leaves (with its own
// tombstone, pushed to every honest node), or the admin ejects it (with
// force if it does not answer). Either way every honest node must learn it.
func (s *sim) expel(ctx context.Context) string {
	s.cut.Heal()
	var what string
	if s.rng.IntN(3) == 0 {
		row := s.bad.sign(syncgroup.MemberKey(s.bad.id()), nil, true, syncgroup.Timestamp{Wall: time.Now().UnixNano()}, s.bad.nextSeq(0))
		for _, id := range s.ids {
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			s.bad.push(pctx, id, pushMsg{Group: s.g, Rows: []syncgroup.Row{row}})
			cancel()
		}
		what = "leave: the hostile member leaves"
	} else {
		ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
		e, err := s.ns[phone].EjectMemberWith(ectx, s.g, s.bad.id(), node.EjectOptions{})
		cancel()
		what = fmt.Sprintf("eject: the hostile member: %d held, %d kept, %d at risk: %v", len(e.Held), len(e.Kept), len(e.AtRisk), errString(err))
		if err != nil {
			ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
			e, err = s.ns[phone].EjectMemberWith(ectx, s.g, s.bad.id(), node.EjectOptions{Force: true})
			cancel()
			what += fmt.Sprintf("; with force: %d held, %d kept, %d at risk: %v", len(e.Held), len(e.Kept), len(e.AtRisk), errString(err))
		}
	}
	if err := s.waitMembers(numNodes, 10*time.Second); err != nil {
		return what + "; " + err.Error() + " (left for the checks)"
	}
	s.out, s.outAt = true, time.Now()
	return what
}
