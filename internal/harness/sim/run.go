package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/harness/netsplit"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
)

// run is one simulation's state. mu guards the first-reference, copy and
// knowledge times, refs, and every member's node (crashes replace it).
type run struct {
	cfg   Config
	w     io.Writer
	start time.Time
	rng   *rand.Rand
	fc    fetcher.Config
	cut   netsplit.Partition
	ms    []*member
	g     syncnode.GroupID
	rep   Report

	mu                    sync.Mutex
	firstRef              map[syncnode.BlobRef]time.Time
	firstCopy, firstKnown map[syncnode.BlobRef]time.Duration
	refs                  []syncnode.BlobRef
	// unref holds the blobs whose row was deleted or overwritten: to be
	// collected, not kept.
	unref map[syncnode.BlobRef]bool

	crashed []down
	fetched atomic.Int64 // bytes of the devices' fetches that completed
	cpu0    time.Duration
}

// down is a crashed member and the write after which it restarts.
type down struct {
	m     *member
	until int
}

func (r *run) closeAll() {
	for _, m := range r.ms {
		if m.n != nil {
			m.n.Close()
		}
	}
}

// setUp opens the nodes (fast retries, so the run is short) and has them
// all join one group the first device creates.
func (r *run) setUp(ctx context.Context) error {
	r.fc = fetcher.Config{}
	r.fc.BaseDelay, r.fc.Jitter, r.fc.MaxShift = 50*time.Millisecond, 50*time.Millisecond, 4
	r.fc.FirstScan, r.fc.ScanInterval = 200*time.Millisecond, time.Second
	for _, kind := range []struct {
		dev    syncnode.DevType
		n      int
		budget int64
	}{{syncnode.Normal, r.cfg.Devices, r.cfg.Budget}, {syncnode.Leaf, r.cfg.Leaves, r.cfg.Budget}, {syncnode.Server, r.cfg.Servers, 0}} {
		for range kind.n {
			if err := r.add(kind.dev, kind.budget); err != nil {
				return err
			}
		}
	}
	r.rep.Nodes = len(r.ms)
	admin := r.ms[0].n
	spec, err := admin.CreateGroup("sim", []string{"sim/"}, true, syncnode.Normal)
	if err != nil {
		return err
	}
	r.g = spec.ID
	for _, m := range r.ms[1:] {
		inv, err := admin.Invite(r.g, m.n.ID(), m.dev, time.Hour)
		if err != nil {
			return err
		}
		if _, err := m.n.JoinGroup(ctx, inv); err != nil {
			return fmt.Errorf("sim: join: %w", err)
		}
	}
	fmt.Fprintf(r.w, "%d nodes joined (%d devices, %d leaves, %d servers)\n", len(r.ms), r.cfg.Devices, r.cfg.Leaves, r.cfg.Servers)
	return nil
}

// add opens a node of type dev behind the run's partition gater.
func (r *run) add(dev syncnode.DevType, budget int64) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	c := node.Config{DataDir: filepath.Join(r.cfg.Dir, fmt.Sprintf("node%02d", len(r.ms))), ListenAddrs: []string{addr},
		SyncInterval: 2 * time.Second, IOTimeout: 5 * time.Second, Fetcher: &r.fc, BlobBudget: budget, NoLAN: true,
		CollectGrace: r.cfg.grace()}
	if k := len(r.ms) - r.cfg.Devices - r.cfg.Leaves; dev == syncnode.Server && r.cfg.ServerStore != nil {
		c.S3 = r.cfg.ServerStore(k)
		c.S3.Endpoint = r.cfg.Faults[k].Addr()
	}
	gater := r.cut.Gater()
	c.Gater = gater
	m := &member{cfg: c, dev: dev}
	m.cfg.Access = &m.acc
	n, err := node.Open(m.cfg)
	if err != nil {
		return err
	}
	gater.SetSelf(n.ID())
	m.id, m.n = n.ID(), n
	r.ms = append(r.ms, m)
	return nil
}

func (r *run) servers() []*member { return r.ms[r.cfg.Devices+r.cfg.Leaves:] }

// watch polls the servers every few milliseconds for the blobs they do
// not hold yet, so the figures do not depend on the pace of the writes.
// It returns the function that stops it (and may be called again).
func (r *run) watch(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			r.poll()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return func() { cancel(); <-done }
}

func (r *run) poll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ref := range r.refs {
		if _, ok := r.firstCopy[ref]; ok || r.unref[ref] {
			continue
		}
		if _, ok := r.firstKnown[ref]; !ok {
			for _, s := range r.servers() {
				if s.n == nil {
					continue
				}
				if sp, err := s.n.Signpost(ref); err == nil && len(sp.Groups()) > 0 {
					r.firstKnown[ref] = time.Since(r.firstRef[ref])
					break
				}
			}
		}
		for _, s := range r.servers() {
			if s.n != nil && s.n.HasBlob(ref) {
				r.firstCopy[ref] = time.Since(r.firstRef[ref])
				break
			}
		}
	}
}

// open and closeNode change a member's node under mu.
func (r *run) open(m *member) error {
	n, err := node.Open(m.cfg)
	r.mu.Lock()
	m.n = n
	r.mu.Unlock()
	return err
}

func (r *run) closeNode(m *member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m.n.Close()
	m.n = nil
}

// writeAll writes the blobs and rows, crashing, restarting, cutting and
// healing along the way, then heals and restarts everything.
func (r *run) writeAll(ctx context.Context) error {
	crashEvery := max(1, r.cfg.Blobs/max(1, r.cfg.Crashes))
	partEvery := max(4, r.cfg.Blobs/max(1, r.cfg.Partitions))
	departEvery := max(2, r.cfg.Blobs/max(1, r.cfg.Departures+r.cfg.Ejections))
	faultEvery := max(4, r.cfg.Blobs/max(1, r.cfg.StoreFaults))
	unrefEvery := max(2, r.cfg.Blobs/max(1, r.cfg.Unreferences))
	var faulty StoreFaults
	r.cpu0 = cpuTime()
	buf := make([]byte, r.cfg.BlobSize)
	for i := range r.cfg.Blobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.restartDue(i); err != nil {
			return err
		}
		if r.rep.Crashes < r.cfg.Crashes && i > 0 && i%crashEvery == 0 {
			r.crashOne(i, crashEvery)
		}
		if err := r.rejoinDue(ctx, i); err != nil {
			return err
		}
		if i > 0 && i%departEvery == departEvery/2 {
			r.depart(ctx, i, departEvery)
		}
		switch {
		case r.rep.Partitions < r.cfg.Partitions && i%partEvery == partEvery/4:
			r.split()
		case i%partEvery == 3*partEvery/4:
			r.cut.Heal()
		}
		switch {
		case len(r.cfg.Faults) > 0 && r.rep.StoreFaults < r.cfg.StoreFaults && i%faultEvery == faultEvery/3:
			// One server's store fails for a stretch: down, or a read or
			// two cut short and down after.
			faulty = r.cfg.Faults[r.rng.IntN(len(r.cfg.Faults))]
			if r.rng.IntN(2) == 0 {
				faulty.SetUnavailable(true)
			} else {
				faulty.CutReads(1 + r.rng.IntN(2))
			}
			r.rep.StoreFaults++
		case faulty != nil && i%faultEvery == 2*faultEvery/3:
			faulty.CutReads(0)
			faulty.SetUnavailable(false)
			faulty = nil
		}
		if err := r.writeOne(ctx, i, buf); err != nil {
			return err
		}
		if r.rep.Unreferenced < r.cfg.Unreferences && i > 0 && i%unrefEvery == unrefEvery/2 {
			r.unreference()
		}
		pause := r.cfg.Pause
		if pause <= 0 {
			pause = 20 * time.Millisecond
		}
		time.Sleep(time.Duration(r.rng.Int64N(int64(pause))))
	}
	r.cut.Heal()
	if faulty != nil {
		faulty.CutReads(0)
		faulty.SetUnavailable(false)
	}
	for _, d := range r.crashed {
		if err := r.open(d.m); err != nil {
			return fmt.Errorf("sim: restart: %w", err)
		}
	}
	r.crashed = nil
	if err := r.rejoinDue(ctx, math.MaxInt); err != nil {
		return err
	}
	fmt.Fprintf(r.w, "%d blobs written, %d crashes, %d partitions healed; waiting up to %s for server copies\n", len(r.refs), r.rep.Crashes, r.rep.Partitions, r.cfg.Settle)
	return nil
}

// writeOne has a random live device store a new blob and write a row
// naming it, in either order, then plays a user: rm of a held blob, or a
// fetch of an older one racing evictions.
func (r *run) writeOne(ctx context.Context, i int, buf []byte) error {
	var writers []*member
	for _, m := range r.ms[:r.cfg.Devices+r.cfg.Leaves] {
		if m.n != nil && !m.out {
			writers = append(writers, m)
		}
	}
	wm := writers[r.rng.IntN(len(writers))]
	for j := range buf {
		buf[j] = byte(r.rng.Uint32())
	}
	ref := testkit.Ref(buf)
	v, err := msgpack.Marshal(map[string]any{"i": i, "blob": ref})
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.firstRef[ref] = time.Now()
	r.refs = append(r.refs, ref)
	r.mu.Unlock()
	put := func() error {
		_, err := wm.n.PutBlob(ctx, bytes.NewReader(buf))
		return err
	}
	row := func() error {
		_, err := wm.n.PutRow(r.g, fmt.Sprintf("sim/%05d", i), v)
		return err
	}
	// A third of the rows are written before their blob is stored, as a
	// program that writes the row first does.
	first, second := put, row
	if r.rng.IntN(3) == 0 {
		first, second = row, put
		r.rep.RowsFirst++
	}
	if err := first(); err != nil {
		return err
	}
	if err := second(); err != nil {
		return err
	}
	r.userActions(ctx, writers)
	return nil
}

// userActions: users remove blobs they hold (refused while pinned), and
// devices with tight budgets fetch older blobs, racing their own
// evictions and the hand-offs.
func (r *run) userActions(ctx context.Context, writers []*member) {
	if r.rng.IntN(4) == 0 && len(r.refs) > 1 {
		um := writers[r.rng.IntN(len(writers))]
		var held []syncnode.BlobRef
		for _, ref := range r.refs[:len(r.refs)-1] {
			if um.n.HasBlob(ref) {
				held = append(held, ref)
			}
		}
		if len(held) > 0 {
			old := held[r.rng.IntN(len(held))]
			if err := um.n.RemoveBlob(old); err == nil {
				r.rep.Removed++
			} else if errors.Is(err, node.ErrPinned) {
				r.rep.RmRefused++
			}
		}
	}
	if r.rng.IntN(3) == 0 && len(r.refs) > 1 {
		fm := writers[r.rng.IntN(len(writers))]
		old := r.refs[r.rng.IntN(len(r.refs)-1)]
		r.rep.Fetches++
		go func(n *node.Node) {
			fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if info, err := n.FetchBlob(fctx, old, node.FetchOptions{}); err == nil {
				r.fetched.Add(info.Size)
			}
		}(fm.n)
	}
}

// settle waits, up to Settle each, for every blob to reach a server and
// then for the last share transfers to settle: an escrow left by a crash
// settles when its holder's recovery reaches the acceptor.
func (r *run) settle(ctx context.Context, stopWatching func()) {
	deadline := time.Now().Add(r.cfg.Settle)
	allCopied := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, ref := range r.refs {
			if _, ok := r.firstCopy[ref]; !ok && !r.unref[ref] {
				return false
			}
		}
		return true
	}
	for !allCopied() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	stopWatching()
	deadline = time.Now().Add(r.cfg.Settle)
	settledOne := func(ref syncnode.BlobRef) bool {
		if r.unref[ref] {
			return collected(r.ms, ref, r.g)
		}
		return total(r.ms, ref, r.g) == 2 && !pinnedAfterServer(r.ms, ref, r.g)
	}
	// Each poll looks again from the first blob not yet seen settled, and
	// only a sweep that finds every blob settled at once ends the wait:
	// the harness's polls, whose CPU the report counts with the nodes',
	// cost a blob or two each rather than all of them.
	first := 0
	for time.Now().Before(deadline) && ctx.Err() == nil {
		for first < len(r.refs) && settledOne(r.refs[first]) {
			first++
		}
		if first == len(r.refs) {
			if i := slices.IndexFunc(r.refs, func(ref syncnode.BlobRef) bool { return !settledOne(ref) }); i < 0 {
				return
			} else {
				first = i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tally counts what the run found and fails it if a blob was lost or
// ownership did not settle.
func (r *run) tally() (Report, error) {
	rep, ms, g := &r.rep, r.ms, r.g
	var lat, known []time.Duration
	for _, ref := range r.refs {
		if r.unref[ref] {
			if why := uncollected(ms, ref, g); why == "" {
				rep.Collected++
			} else {
				rep.Uncollected++
				fmt.Fprintf(r.w, "blob %s, its row gone, not collected: %s\n", ref, why)
			}
			continue
		}
		held := false
		for _, m := range ms {
			h, sh, err := m.n.Holding(ref)
			if err == nil && sh[g] > 0 && !h && !slices.Contains(m.n.Restoring(), ref) {
				rep.SharesWithoutCopy++
			}
			held = held || m.n.HasBlob(ref)
		}
		if pinnedAfterServer(ms, ref, g) {
			rep.PinnedAfterServer++
		}
		if !held {
			rep.Lost++
		}
		d, ok := r.firstCopy[ref]
		if !ok {
			rep.NotOnServer++
			continue
		}
		lat = append(lat, d)
		if n := total(ms, ref, g); n != 2 {
			rep.BadShares++
			var who []string
			for k, m := range ms {
				held, sh, _ := m.n.Holding(ref)
				if sh[g] > 0 || held {
					w, _ := m.n.Why(ref)
					who = append(who, fmt.Sprintf("node %d (%s): held %v, %d shares, %s", k, m.dev, held, sh[g], w.Handoff))
				}
			}
			fmt.Fprintf(r.w, "blob %s: %d shares in the group: %s\n", ref, n, strings.Join(who, "; "))
		}
	}
	for _, d := range r.firstKnown {
		known = append(known, d)
	}
	rep.Blobs = len(r.refs)
	rep.blobBytes = int64(len(r.refs)) * int64(r.cfg.BlobSize)
	rep.Known50, rep.Known99 = quantiles(known)
	rep.P50, rep.P99 = quantiles(lat)
	for _, m := range ms {
		st := m.n.Stats()
		rep.BytesMoved += m.moved + st.BytesIn
		rep.Messages += m.messages + st.SyncMessages
	}
	rep.Wanted = rep.blobBytes*int64(r.cfg.Servers) + r.fetched.Load()
	rep.CPU = cpuTime() - r.cpu0
	rep.Elapsed = time.Since(r.start)
	if rep.Lost > 0 {
		return *rep, fmt.Errorf("sim: %w: %d blobs", ErrLost, rep.Lost)
	}
	if rep.SharesWithoutCopy > 0 || rep.PinnedAfterServer > 0 || rep.Uncollected > 0 {
		return *rep, fmt.Errorf("sim: %w: %d shares held without a copy, %d blobs pinned on a device after a server copy, %d unreferenced blobs not collected",
			ErrUnsettled, rep.SharesWithoutCopy, rep.PinnedAfterServer, rep.Uncollected)
	}
	return *rep, nil
}
