package hostile

// The checks after every step, and at the end of a run.

import (
	"context"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/syncgroup"
)

// heapBound is how much the test process's heap may grow over one run
// (every seed running beside it included).
const heapBound = 1 << 30

// check verifies the invariants now. Reads of different nodes are not one
// instant: a check that fails is made again a few times, and only one that
// stays broken fails the run.
func (s *sim) check() error {
	var err error
	for try := range 6 {
		if err = s.checkOnce(); err == nil {
			return nil
		}
		time.Sleep(time.Duration(try+1) * 10 * time.Millisecond)
	}
	return err
}

func (s *sim) checkOnce() error {
	for _, b := range s.blobs {
		if err := s.checkBlob(b); err != nil {
			return err
		}
	}
	if s.readmitted != "" {
		return fmt.Errorf("%s admitted the expelled hostile member again with its old invitation", s.readmitted)
	}
	if s.rep.Steps > s.ejectAt && !s.out {
		return fmt.Errorf("the hostile member is still a member at some honest node after it was expelled")
	}
	if s.out {
		s.bad.mu.Lock()
		arrivals := slices.Clone(s.bad.arrivals)
		s.bad.mu.Unlock()
		for _, a := range arrivals {
			if s.after[fmt.Sprintf("%s/%d", a.row.Writer, a.row.Seq)] {
				return fmt.Errorf("the expelled hostile member received %q (by %s, seq %d) at %s, written after its expulsion (known everywhere at %s)",
					a.row.Key, s.name(a.row.Writer), a.row.Seq, a.at.Format(time.StampMicro), s.outAt.Format(time.StampMicro))
			}
		}
	}
	bound := len(s.honest) + len(s.legal)
	for i, n := range s.ns {
		spec, err := n.GroupSpec(s.g)
		if err != nil {
			return err
		}
		s.rep.Checks++
		if !slices.Equal(spec.Admins, []peer.ID{s.ids[phone], s.ids[laptop]}) || !slices.Equal(spec.Prefixes, []string{"sim/"}) {
			return fmt.Errorf("%s's spec changed: admins %v, prefixes %q", names[i], spec.Admins, spec.Prefixes)
		}
		for _, m := range n.Members(s.g) {
			if slices.Contains(s.intruders, m.Peer) {
				return fmt.Errorf("%s counts %s, whom the hostile member admitted, as a member", names[i], m.Peer)
			}
		}
		for j := range numNodes {
			if !slices.ContainsFunc(n.Members(s.g), func(m syncgroup.Member) bool { return m.Peer == s.ids[j] }) {
				return fmt.Errorf("%s no longer counts %s as a member", names[i], names[j])
			}
		}
		rows, err := n.ListRows(s.g, "")
		if err != nil {
			return err
		}
		s.rep.Checks++
		if len(rows) > bound {
			return fmt.Errorf("%s stores %d rows, more than the %d honest keys and %d the hostile member could write", names[i], len(rows), len(s.honest), len(s.legal))
		}
		for _, r := range rows {
			if s.illegal[r.Key] && r.Writer == s.bad.id() {
				return fmt.Errorf("%s stores %q by the hostile member, a row it could not write (or wrote once out)", names[i], r.Key)
			}
		}
		for _, ref := range s.invented {
			s.rep.Checks++
			if sp, err := n.Signpost(ref); err == nil && (len(sp.Locations) > 0 || len(sp.Groups()) > 0) {
				return fmt.Errorf("%s keeps a signpost of %s, a blob no row names: %d locations, groups %v", names[i], ref, len(sp.Locations), sp.Groups())
			}
		}
		for _, b := range s.blobs {
			sp, err := n.Signpost(b.ref)
			if err != nil {
				continue
			}
			for p, l := range sp.Locations {
				s.rep.Checks++
				if l.IsServer && p != s.ids[server] {
					return fmt.Errorf("%s takes %s for a server copy of %s", names[i], s.name(p), b.ref)
				}
			}
		}
	}
	return nil
}

// checkBlob checks I1–I3 for b over the honest nodes.
func (s *sim) checkBlob(b *blob) error {
	copies, total := 0, 0
	var desc []string
	for i, n := range s.ns {
		held, sh, err := n.Holding(b.ref)
		if err != nil {
			return err
		}
		if held {
			copies++
		}
		total += sh[s.g]
		d := fmt.Sprintf("%s: held %v, shares %d", names[i], held, sh[s.g])
		if w, err := n.Why(b.ref); err == nil && w.Handoff != "" {
			d += ", last hand-off: " + w.Handoff
		}
		desc = append(desc, d)
		s.rep.Checks++
		if sh[s.g] > 0 && !held && !slices.Contains(n.Restoring(), b.ref) {
			return fmt.Errorf("I3: %s holds %d shares of blob %s and no copy", names[i], sh[s.g], b.ref)
		}
	}
	s.rep.Checks += 2
	if total > 2 {
		// Shares are each holder's word: a member that offers shares it
		// never had can push the honest total over two for a while, never
		// take it under. A server that holds two already tells the devices
		// theirs are surplus; by the end of the run it must be two again.
		// An honest run never goes over.
		if !s.bad.lyingHolder {
			return fmt.Errorf("I2: blob %s has %d shares among the honest nodes (%v)", b.ref, total, desc)
		}
		if s.minted == nil {
			s.minted = map[syncnode.BlobRef]bool{}
		}
		s.minted[b.ref] = true
	}
	if b.row && copies > 0 {
		b.protected = true
	}
	if b.protected && copies == 0 {
		return fmt.Errorf("I1: blob %s, named by a live honest row, has no copy on an honest node (%v)", b.ref, desc)
	}
	return nil
}

// finish heals the network, has a fresh honest row reach every honest node
// by the nodes' own work within spreadBound, waits for the honest nodes to
// converge, and checks the heap.
func (s *sim) finish(ctx context.Context) error {
	s.cut.Heal()
	if !s.out {
		s.log("end: " + s.expel(ctx))
		if err := s.check(); err != nil {
			return err
		}
	}
	w := s.rng.IntN(numNodes)
	v, _ := msgpack.Marshal("fresh")
	r, err := s.ns[w].PutRow(s.g, "sim/fresh", v)
	s.wrote(r, err)
	if err != nil {
		return err
	}
	start := time.Now()
	for _, n := range s.ns {
		for {
			if got, ok, _ := n.GetRow(s.g, "sim/fresh"); ok && got.Seq == r.Seq && got.Writer == r.Writer {
				break
			}
			if time.Since(start) > spreadBound {
				return fmt.Errorf("anti-entropy: a fresh row by %s has not reached %s in %s", names[w], n.ID(), spreadBound)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	s.rep.Spread = time.Since(start)
	s.log(fmt.Sprintf("end: a fresh row by %s reached every honest node in %s", names[w], s.rep.Spread.Round(time.Millisecond)))
	deadline := time.Now().Add(15 * time.Second)
	for {
		why := s.diverged()
		if why == "" {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("convergence: after 15 s of rounds: %s", why)
		}
		for _, n := range s.ns {
			n.SyncNow(s.g)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.check(); err != nil {
		return err
	}
	s.rep.Minted = len(s.minted)
	for ref := range s.minted {
		for {
			total := 0
			var desc []string
			for i, n := range s.ns {
				held, sh, err := n.Holding(ref)
				if err != nil {
					return err
				}
				total += sh[s.g]
				desc = append(desc, fmt.Sprintf("%s: held %v, shares %d", names[i], held, sh[s.g]))
			}
			if total <= 2 {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("I2: blob %s still has %d honest shares at the end, the surplus the hostile member minted not dropped (%v)", ref, total, desc)
			}
			for _, n := range s.ns {
				n.SyncNow(s.g)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > s.heap0+heapBound {
		return fmt.Errorf("memory: the heap grew from %d MiB to %d MiB", s.heap0>>20, ms.HeapAlloc>>20)
	}
	return nil
}

// diverged says how the honest nodes' rows differ from one another or
// from the honest writes, or "". Rows the hostile member wrote are left
// out of the comparison: it may give each node different ones and claim
// to each that it sent them all (its own writes are its word), so they
// need not converge; they must only be legal.
func (s *sim) diverged() string {
	var first map[string]syncgroup.Row
	for i, n := range s.ns {
		rows, err := n.ListRows(s.g, "sim/")
		if err != nil {
			return err.Error()
		}
		got := map[string]syncgroup.Row{}
		for _, r := range rows {
			if r.Writer == s.bad.id() {
				if s.illegal[r.Key] {
					return fmt.Sprintf("%s stores %q, written by the hostile member once out or not legal", names[i], r.Key)
				}
				continue
			}
			got[r.Key] = r
		}
		for _, k := range slices.Sorted(maps.Keys(s.honest)) {
			want := s.honest[k]
			r, ok := got[k]
			if ok == want.Deleted || (ok && (r.Writer != want.Writer || r.Seq != want.Seq)) {
				return fmt.Sprintf("%s has %q live %v (by %s, seq %d), want live %v (by %s, seq %d)",
					names[i], k, ok, s.name(r.Writer), r.Seq, !want.Deleted, s.name(want.Writer), want.Seq)
			}
		}
		if first == nil {
			first = got
			continue
		}
		for _, k := range slices.Sorted(maps.Keys(got)) {
			if f, ok := first[k]; !ok || f.Writer != got[k].Writer || f.Seq != got[k].Seq {
				return fmt.Sprintf("%s has %q (by %s, seq %d) and %s not (or another version)", names[i], k, s.name(got[k].Writer), got[k].Seq, names[0])
			}
		}
		for _, k := range slices.Sorted(maps.Keys(first)) {
			if _, ok := got[k]; !ok {
				return fmt.Sprintf("%s has %q (by %s, seq %d) and %s not", names[0], k, s.name(first[k].Writer), first[k].Seq, names[i])
			}
		}
	}
	return ""
}
