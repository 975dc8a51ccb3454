package ownsim

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode/node"
)

// step draws one operation from the schedule and runs it; it returns its
// description. The draw depends on the seed alone: an operation that does
// not apply now (its node is down) does nothing.
func (s *sim) step(ctx context.Context) string {
	ops := 110
	if s.cfg.Faults != nil {
		ops = 116
	}
	op := s.rng.IntN(ops)
	bi := s.rng.IntN(len(s.blobs))
	mi := s.rng.IntN(numNodes)
	d := draw{bi: bi, b: s.blobs[bi], mi: mi, m: s.ms[mi], side: s.rng.Uint32()}
	if op < 72 {
		return s.blobStep(ctx, op, d)
	}
	return s.worldStep(ctx, op, d)
}

// draw is what a step drew besides its operation: a blob, a member and a
// number that picks sides, delays and which member leaves.
type draw struct {
	bi   int
	b    *blob
	mi   int
	m    *member
	side uint32
}

// blobStep runs an operation on a blob at a member: put, row, fetch,
// round, eviction or removal (op below 72).
func (s *sim) blobStep(ctx context.Context, op int, d draw) string {
	bi, b, mi, m := d.bi, d.b, d.mi, d.m
	switch {
	case op < 14: // the origin stores the blob's bytes
		o := s.ms[b.origin]
		if b.put || o.n == nil || o.out {
			return fmt.Sprintf("put blob %d on %s: skipped", bi, o.name)
		}
		_, err := o.n.PutBlob(ctx, bytes.NewReader(b.data))
		b.put = err == nil
		b.late = b.put && b.unref
		return fmt.Sprintf("put blob %d on %s: %v", bi, o.name, errString(err))
	case op < 28: // the origin writes the row naming it
		o := s.ms[b.origin]
		if b.row || o.n == nil || o.out {
			return fmt.Sprintf("row for blob %d on %s: skipped", bi, o.name)
		}
		_, err := o.n.PutRow(s.g, b.key(), rowValue(b))
		b.row = err == nil
		return fmt.Sprintf("row for blob %d on %s (blob put: %v): %v", bi, o.name, b.put, errString(err))
	case op < 40:
		if m.n == nil {
			return fmt.Sprintf("fetch blob %d on %s: down", bi, m.name)
		}
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := m.n.FetchBlob(fctx, b.ref, node.FetchOptions{})
		cancel()
		return fmt.Sprintf("fetch blob %d on %s: %v", bi, m.name, errString(err))
	case op < 55:
		if m.n == nil {
			return fmt.Sprintf("sync on %s: down", m.name)
		}
		return fmt.Sprintf("sync on %s: %v", m.name, errString(m.n.SyncNow(s.g)))
	case op < 65:
		if m.n == nil || mi == server {
			return fmt.Sprintf("evict on %s: skipped", m.name)
		}
		rep, err := m.n.Evict()
		return fmt.Sprintf("evict on %s: %d evicted, %v", m.name, len(rep.Evicted), errString(err))
	default: // op < 72
		if m.n == nil {
			return fmt.Sprintf("rm blob %d on %s: down", bi, m.name)
		}
		return fmt.Sprintf("rm blob %d on %s: %v", bi, m.name, errString(m.n.RemoveBlob(b.ref)))
	}
}

// worldStep runs an operation on the nodes, the network or the object
// store (op 72 and above): stops, restarts, partitions, leaves,
// ejections, rejoins, faults, or a pause.
func (s *sim) worldStep(ctx context.Context, op int, d draw) string {
	b, m, side := d.b, d.m, d.side
	switch {
	case op < 79:
		if m.n == nil || len(s.up()) <= 2 {
			return fmt.Sprintf("stop %s: skipped", m.name)
		}
		// Work in flight: a fetch and a round are cut short by the stop.
		go m.n.FetchBlob(context.Background(), b.ref, node.FetchOptions{})
		go m.n.SyncNow(s.g)
		time.Sleep(time.Duration(side%5) * time.Millisecond)
		return fmt.Sprintf("stop %s mid-work: %v", m.name, errString(s.stop(m)))
	case op < 88:
		if m.n != nil {
			return fmt.Sprintf("restart %s: up", m.name)
		}
		return fmt.Sprintf("restart %s: %v", m.name, errString(s.start(m)))
	case op < 94:
		if s.split {
			s.cut.Heal()
			s.split = false
			return "heal the network"
		}
		sides := make([]int, numNodes)
		ids := make([]peer.ID, numNodes)
		for i := range numNodes {
			sides[i] = int(side>>i) & 1
			ids[i] = s.ms[i].id
		}
		s.cut.Split(ids, s.hosts(), sides)
		s.split = true
		return fmt.Sprintf("split the network %v", sides)
	case op >= 100 && op < 102:
		return s.leave(ctx, s.ms[laptop+int(side%2)])
	case op >= 102 && op < 104:
		return s.eject(ctx, s.ms[laptop+int(side%2)])
	case op >= 104 && op < 106:
		return s.rejoin(ctx, s.ms[laptop+int(side%2)])
	case op >= 106 && op < 108:
		return s.unreference(d)
	case op >= 108 && op < 110:
		return s.nameAgain(d)
	case op >= 110 && op < 112:
		s.cfg.Faults.SetUnavailable(true)
		return "the object store answers 503"
	case op >= 112 && op < 114:
		s.cfg.Faults.CutReads(1 + int(side%2))
		return "the object store's next reads are cut short"
	case op >= 114:
		s.cfg.Faults.CutReads(0)
		s.cfg.Faults.SetUnavailable(false)
		return "the object store answers again"
	default:
		d := time.Duration(10+side%40) * time.Millisecond
		time.Sleep(d)
		return fmt.Sprintf("let background work run %s", d)
	}
}

// nameAgain writes, at a member, a row naming again a blob whose row
// went: within its grace, or after its collection. The blob is to be
// kept while the row lives if the member holds a copy once its row is
// written (the row came before any collection of that copy).
func (s *sim) nameAgain(d draw) string {
	b, m := d.b, d.m
	if !b.unref || m.n == nil || m.out {
		return fmt.Sprintf("name blob %d again on %s: skipped", d.bi, m.name)
	}
	_, err := m.n.PutRow(s.g, b.key(), rowValue(b))
	if err != nil {
		return fmt.Sprintf("name blob %d again on %s: %v", d.bi, m.name, err)
	}
	b.unref, b.row, b.again = false, true, true
	b.protected = m.n.HasBlob(b.ref)
	return fmt.Sprintf("name blob %d again on %s, which holds it: %v", d.bi, m.name, b.protected)
}

// unreference deletes or overwrites, at a member that has it, the row
// naming a blob: the blob is referenced no more, and is to be collected.
// The member has the row, so its write comes after it and wins.
func (s *sim) unreference(d draw) string {
	b, m := d.b, d.m
	if !b.row || b.unref || m.n == nil || m.out {
		return fmt.Sprintf("unreference blob %d on %s: skipped", d.bi, m.name)
	}
	if _, ok, err := m.n.GetRow(s.g, b.key()); err != nil || !ok {
		return fmt.Sprintf("unreference blob %d on %s: the row is not there yet", d.bi, m.name)
	}
	var err error
	what := "delete"
	if d.side%2 == 0 {
		_, err = m.n.DeleteRow(s.g, b.key())
	} else {
		what = "overwrite"
		v, _ := msgpack.Marshal(map[string]any{"photo": "gone"})
		_, err = m.n.PutRow(s.g, b.key(), v)
	}
	b.unref = err == nil
	return fmt.Sprintf("%s the row of blob %d on %s: %v", what, d.bi, m.name, errString(err))
}
