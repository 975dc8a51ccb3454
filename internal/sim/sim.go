// Package sim runs a churn simulation of a syncnode mesh on loopback:
// devices, leaves and servers in one syncgroup, random rows referencing
// new blobs, devices evicting under tight budgets, nodes crashing and
// restarting. It reports how long blobs took to reach a server, whether
// any was lost, whether shares were conserved, and the bytes moved.
package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/netsplit"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
)

// Config sizes a simulation.
type Config struct {
	Devices, Leaves, Servers int
	// Blobs is how many rows with a new blob are written; BlobSize is each
	// blob's size.
	Blobs, BlobSize int
	// Budget is each device's and leaf's blob budget in bytes.
	Budget int64
	// Crashes is how many times a random node is stopped mid-run and
	// restarted a little later.
	Crashes int
	// Partitions is how many times the nodes are cut into two random
	// sides (connections across refused) for a stretch of writes, then
	// healed.
	Partitions int
	// Settle bounds the wait, after the last write, for every blob to
	// reach a server.
	Settle time.Duration
	Seed   uint64
	// Dir holds the nodes' data directories.
	Dir string
}

// Report is what a simulation found.
type Report struct {
	Nodes, Blobs, Crashes, Partitions int
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

// PerWritePerNode returns x divided by the writes and the nodes.
func (r Report) PerWritePerNode(x float64) float64 {
	return x / float64(max(1, r.Blobs)) / float64(max(1, r.Nodes))
}

func (r Report) String() string {
	return fmt.Sprintf("nodes %d, blobs %d, crashes %d, partitions %d, elapsed %s\n"+
		"time to first server copy: p50 %s, p99 %s\n"+
		"rows before their blob: %d; user rm done %d, refused (pinned) %d; device fetches racing evictions: %d\n"+
		"blobs lost: %d; not on a server: %d; share totals wrong: %d\n"+
		"shares held without a copy: %d; blobs pinned on a device after a server copy: %d\n"+
		"time to first server knowing of the blob: p50 %s, p99 %s\n"+
		"per write per node: %.1f sync messages, %.2f ms CPU\n"+
		"bytes moved: %d (%.1f× the blobs' bytes, %.2f× what the copies wanted need)",
		r.Nodes, r.Blobs, r.Crashes, r.Partitions, r.Elapsed.Round(time.Millisecond),
		r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond),
		r.RowsFirst, r.Removed, r.RmRefused, r.Fetches,
		r.Lost, r.NotOnServer, r.BadShares, r.SharesWithoutCopy, r.PinnedAfterServer,
		r.Known50.Round(time.Millisecond), r.Known99.Round(time.Millisecond),
		r.PerWritePerNode(float64(r.Messages)), r.PerWritePerNode(float64(r.CPU.Microseconds())/1000),
		r.BytesMoved, float64(r.BytesMoved)/float64(max(1, r.blobBytes)), float64(r.BytesMoved)/float64(max(1, r.Wanted)))
}

type member struct {
	id  peer.ID
	cfg node.Config
	n   *node.Node // nil while crashed
	dev syncnode.DevType
	// moved and messages count the blob bytes received and the sync
	// frames sent by earlier incarnations.
	moved, messages int64
}

// Run runs the simulation, logging progress to w.
func Run(ctx context.Context, cfg Config, w io.Writer) (rep Report, err error) {
	start := time.Now()
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed))
	var ms []*member
	defer func() {
		for _, m := range ms {
			if m.n != nil {
				m.n.Close()
			}
		}
	}()
	fc := fetcher.DefaultConfig()
	fc.BaseDelay, fc.Jitter, fc.MaxShift = 50*time.Millisecond, 50*time.Millisecond, 4
	fc.FirstScan, fc.ScanInterval = 200*time.Millisecond, time.Second
	var cut netsplit.Partition
	add := func(dev syncnode.DevType, budget int64) error {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		c := node.Config{DataDir: filepath.Join(cfg.Dir, fmt.Sprintf("node%02d", len(ms))), ListenAddrs: []string{addr},
			SyncInterval: 2 * time.Second, IOTimeout: 5 * time.Second, Fetcher: &fc, BlobBudget: budget}
		gater := cut.Gater()
		c.Gater = gater
		n, err := node.Open(c)
		if err != nil {
			return err
		}
		gater.SetSelf(n.ID())
		ms = append(ms, &member{id: n.ID(), cfg: c, n: n, dev: dev})
		return nil
	}
	for range cfg.Devices {
		if err := add(syncnode.Normal, cfg.Budget); err != nil {
			return rep, err
		}
	}
	for range cfg.Leaves {
		if err := add(syncnode.Leaf, cfg.Budget); err != nil {
			return rep, err
		}
	}
	for range cfg.Servers {
		if err := add(syncnode.Server, 0); err != nil {
			return rep, err
		}
	}
	rep.Nodes = len(ms)
	admin := ms[0].n
	spec, err := admin.CreateGroup("sim", []string{"sim/"}, true, syncnode.Normal)
	if err != nil {
		return rep, err
	}
	g := spec.ID
	for _, m := range ms[1:] {
		inv, err := admin.Invite(g, m.n.ID(), m.dev, time.Hour)
		if err != nil {
			return rep, err
		}
		if _, err := m.n.JoinGroup(ctx, inv, admin.Host().Addrs()); err != nil {
			return rep, fmt.Errorf("sim: join: %w", err)
		}
	}
	fmt.Fprintf(w, "%d nodes joined (%d devices, %d leaves, %d servers)\n", len(ms), cfg.Devices, cfg.Leaves, cfg.Servers)

	firstRef := map[syncnode.BlobRef]time.Time{}
	firstCopy := map[syncnode.BlobRef]time.Duration{}
	firstKnown := map[syncnode.BlobRef]time.Duration{}
	var refs []syncnode.BlobRef
	servers := ms[cfg.Devices+cfg.Leaves:]
	// A poller watches the servers every few milliseconds for the blobs
	// they do not hold yet, so the figures do not depend on the pace of
	// the writes. mu guards the maps, refs and every member's node.
	var mu sync.Mutex
	poll := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, ref := range refs {
			if _, ok := firstCopy[ref]; ok {
				continue
			}
			if _, ok := firstKnown[ref]; !ok {
				for _, s := range servers {
					if s.n == nil {
						continue
					}
					if sp, err := s.n.Signpost(ref); err == nil && len(sp.Groups()) > 0 {
						firstKnown[ref] = time.Since(firstRef[ref])
						break
					}
				}
			}
			for _, s := range servers {
				if s.n != nil && s.n.HasBlob(ref) {
					firstCopy[ref] = time.Since(firstRef[ref])
					break
				}
			}
		}
	}
	pollCtx, stopPolling := context.WithCancel(ctx)
	polling := make(chan struct{})
	go func() {
		defer close(polling)
		for pollCtx.Err() == nil {
			poll()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	defer func() { stopPolling(); <-polling }()
	// open and closeNode change a member's node under mu.
	open := func(m *member) (err error) {
		n, err := node.Open(m.cfg)
		mu.Lock()
		m.n = n
		mu.Unlock()
		return err
	}
	closeNode := func(m *member) {
		mu.Lock()
		defer mu.Unlock()
		m.n.Close()
		m.n = nil
	}
	type down struct {
		m     *member
		until int
	}
	var crashed []down
	crashEvery := max(1, cfg.Blobs/max(1, cfg.Crashes))
	partEvery := max(4, cfg.Blobs/max(1, cfg.Partitions))
	splitNow := func() {
		ids := make([]peer.ID, len(ms))
		hosts := make([]host.Host, len(ms))
		side := make([]int, len(ms))
		for k, m := range ms {
			ids[k], side[k] = m.id, rng.IntN(2)
			if m.n != nil {
				hosts[k] = m.n.Host()
			}
		}
		side[0], side[1+rng.IntN(len(ms)-1)] = 0, 1
		cut.Split(ids, hosts, side)
		rep.Partitions++
	}
	var fetched atomic.Int64 // bytes of the devices' fetches that completed
	cpu0 := cpuTime()
	buf := make([]byte, cfg.BlobSize)
	for i := range cfg.Blobs {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		// Restart the nodes whose downtime is over.
		crashed = slices.DeleteFunc(crashed, func(d down) bool {
			if d.until > i {
				return false
			}
			if err = open(d.m); err != nil {
				return false
			}
			return true
		})
		if err != nil {
			return rep, fmt.Errorf("sim: restart: %w", err)
		}
		if rep.Crashes < cfg.Crashes && i > 0 && i%crashEvery == 0 {
			m := ms[1+rng.IntN(len(ms)-1)] // the admin stays up to keep invites simple
			if m.n != nil {
				st := m.n.Stats()
				m.moved += st.BytesIn
				m.messages += st.SyncMessages
				closeNode(m)
				crashed = append(crashed, down{m, i + 1 + rng.IntN(crashEvery)})
				rep.Crashes++
			}
		}
		switch {
		case rep.Partitions < cfg.Partitions && i%partEvery == partEvery/4:
			splitNow()
		case i%partEvery == 3*partEvery/4:
			cut.Heal()
		}
		var writers []*member
		for _, m := range ms[:cfg.Devices+cfg.Leaves] {
			if m.n != nil {
				writers = append(writers, m)
			}
		}
		wm := writers[rng.IntN(len(writers))]
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		ref := testkit.Ref(buf)
		v, err := msgpack.Marshal(map[string]any{"i": i, "blob": ref})
		if err != nil {
			return rep, err
		}
		mu.Lock()
		firstRef[ref] = time.Now()
		refs = append(refs, ref)
		mu.Unlock()
		put := func() error {
			_, err := wm.n.PutBlob(ctx, bytes.NewReader(buf))
			return err
		}
		row := func() error {
			_, err := wm.n.PutRow(g, fmt.Sprintf("sim/%05d", i), v)
			return err
		}
		// A third of the rows are written before their blob is stored,
		// as a program that writes the row first does.
		first, second := put, row
		if rng.IntN(3) == 0 {
			first, second = row, put
			rep.RowsFirst++
		}
		if err := first(); err != nil {
			return rep, err
		}
		if err := second(); err != nil {
			return rep, err
		}
		// Users remove blobs they hold (refused while pinned), and
		// devices with tight budgets fetch older blobs, racing their own
		// evictions and the hand-offs.
		if rng.IntN(4) == 0 && len(refs) > 1 {
			um := writers[rng.IntN(len(writers))]
			old := refs[rng.IntN(len(refs)-1)]
			if um.n.HasBlob(old) {
				if err := um.n.RemoveBlob(old); err == nil {
					rep.Removed++
				} else if errors.Is(err, node.ErrPinned) {
					rep.RmRefused++
				}
			}
		}
		if rng.IntN(3) == 0 && len(refs) > 1 {
			fm := writers[rng.IntN(len(writers))]
			old := refs[rng.IntN(len(refs)-1)]
			rep.Fetches++
			go func(n *node.Node) {
				fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				if info, err := n.FetchBlob(fctx, old, node.FetchOptions{}); err == nil {
					fetched.Add(info.Size)
				}
			}(fm.n)
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
	}
	cut.Heal()
	for _, d := range crashed {
		if err = open(d.m); err != nil {
			return rep, fmt.Errorf("sim: restart: %w", err)
		}
	}
	fmt.Fprintf(w, "%d blobs written, %d crashes, %d partitions healed; waiting up to %s for server copies\n", len(refs), rep.Crashes, rep.Partitions, cfg.Settle)
	deadline := time.Now().Add(cfg.Settle)
	allCopied := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(firstCopy) == len(refs)
	}
	for !allCopied() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	stopPolling()
	<-polling
	// Let the last share transfers settle before counting: an escrow left
	// by a crash settles when its holder's recovery reaches the acceptor.
	deadline = time.Now().Add(cfg.Settle)
	settled := func() bool {
		for _, ref := range refs {
			if total(ms, ref, g) != 2 || pinnedAfterServer(ms, ref, g) {
				return false
			}
		}
		return true
	}
	for !settled() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	for _, ref := range refs {
		for _, m := range ms {
			held, sh, err := m.n.Holding(ref)
			if err == nil && sh[g] > 0 && !held && !slices.Contains(m.n.Restoring(), ref) {
				rep.SharesWithoutCopy++
			}
		}
		if pinnedAfterServer(ms, ref, g) {
			rep.PinnedAfterServer++
		}
	}
	rep.Blobs = len(refs)
	rep.blobBytes = int64(len(refs)) * int64(cfg.BlobSize)
	var lat []time.Duration
	for _, ref := range refs {
		held := false
		for _, m := range ms {
			if m.n.HasBlob(ref) {
				held = true
			}
		}
		if !held {
			rep.Lost++
		}
		d, ok := firstCopy[ref]
		if !ok {
			rep.NotOnServer++
			continue
		}
		lat = append(lat, d)
		if total(ms, ref, g) != 2 {
			rep.BadShares++
		}
	}
	var known []time.Duration
	for _, d := range firstKnown {
		known = append(known, d)
	}
	rep.Known50, rep.Known99 = quantiles(known)
	rep.P50, rep.P99 = quantiles(lat)
	for _, m := range ms {
		rep.BytesMoved += m.moved + m.n.Stats().BytesIn
	}
	for _, m := range ms {
		rep.Messages += m.messages + m.n.Stats().SyncMessages
	}
	rep.Wanted = rep.blobBytes*int64(cfg.Servers) + fetched.Load()
	rep.CPU = cpuTime() - cpu0
	rep.Elapsed = time.Since(start)
	if rep.Lost > 0 {
		return rep, fmt.Errorf("sim: %w: %d blobs", ErrLost, rep.Lost)
	}
	if rep.SharesWithoutCopy > 0 || rep.PinnedAfterServer > 0 {
		return rep, fmt.Errorf("sim: %w: %d shares held without a copy, %d blobs pinned on a device after a server copy",
			ErrUnsettled, rep.SharesWithoutCopy, rep.PinnedAfterServer)
	}
	return rep, nil
}

// pinnedAfterServer reports whether a server holds ref verified while a
// device still holds shares of it.
func pinnedAfterServer(ms []*member, ref syncnode.BlobRef, g syncnode.GroupID) bool {
	onServer, pinned := false, false
	for _, m := range ms {
		held, sh, err := m.n.Holding(ref)
		if err != nil {
			continue
		}
		if m.dev == syncnode.Server && held {
			onServer = true
		}
		if m.dev != syncnode.Server && sh[g] > 0 {
			pinned = true
		}
	}
	return onServer && pinned
}

// ErrLost reports blobs that no node holds at the end of a simulation.
var ErrLost = errors.New("blobs lost")

// ErrUnsettled reports ownership that did not settle by the end of a
// simulation: shares without a copy, or devices pinned after a server copy.
var ErrUnsettled = errors.New("ownership not settled")

func total(ms []*member, ref syncnode.BlobRef, g syncnode.GroupID) int {
	t := 0
	for _, m := range ms {
		sh, _ := m.n.BlobShares(ref)
		t += sh[g]
	}
	return t
}

// quantiles returns the p50 and p99 of ds (sorting it).
func quantiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[min(len(ds)-1, len(ds)*99/100)]
}

// cpuTime returns the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port), nil
}
