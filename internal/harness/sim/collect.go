package sim

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
)

// unreference deletes or overwrites, at the admin if it has it, the row
// of an older blob still referenced: the blob is to be collected.
func (r *run) unreference() {
	var live []int
	for i, ref := range r.refs[:len(r.refs)-1] {
		if !r.unref[ref] {
			live = append(live, i)
		}
	}
	if len(live) == 0 {
		return
	}
	i := live[r.rng.IntN(len(live))]
	key := fmt.Sprintf("sim/%05d", i)
	// The admin deletes: it is never ejected, nor leaves. A row that a
	// member wrote after the last of its rows its ejecting admin had seen
	// is refused by the replicas that hear of the ejection first (a known
	// divergence, see PROTOCOL.md): such a delete would leave the row live
	// there, and the blob rightly referenced.
	for _, m := range r.ms[:1] {
		if m.n == nil || m.out {
			continue
		}
		if _, ok, err := m.n.GetRow(r.g, key); err != nil || !ok {
			continue
		}
		var err error
		if r.rng.IntN(2) == 0 {
			_, err = m.n.DeleteRow(r.g, key)
		} else {
			v, _ := msgpack.Marshal(map[string]any{"i": i, "note": "the photo went"})
			_, err = m.n.PutRow(r.g, key, v)
		}
		if err == nil {
			r.mu.Lock()
			r.unref[r.refs[i]] = true
			r.mu.Unlock()
			r.rep.Unreferenced++
		}
		return
	}
}

// collected reports that no node holds shares of ref in g, and no
// server a copy: a device may keep a copy it fetched as a cache, which
// its budget evicts like any other.
func collected(ms []*member, ref syncnode.BlobRef, g syncnode.GroupID) bool {
	for _, m := range ms {
		held, sh, err := m.n.Holding(ref)
		if err != nil || sh[g] > 0 || held && m.dev == syncnode.Server {
			return false
		}
	}
	return true
}

// uncollected says which node still holds shares of ref, or a server a
// copy, or "".
func uncollected(ms []*member, ref syncnode.BlobRef, g syncnode.GroupID) string {
	for k, m := range ms {
		held, sh, err := m.n.Holding(ref)
		switch {
		case err != nil:
			return err.Error()
		case sh[g] > 0:
			w, _ := m.n.Why(ref)
			return fmt.Sprintf("node %d (%s) holds %d shares (its why: groups %v, unreferenced %+v, hand-off %q)", k, m.dev, sh[g], w.Groups, w.Unreferenced, w.Handoff)
		case held && m.dev == syncnode.Server:
			w, _ := m.n.Why(ref)
			return fmt.Sprintf("server %d holds a copy (its why: groups %v, unreferenced %+v, queued %v, running %v, last %q)", k, w.Groups, w.Unreferenced, w.Queued, w.Running, w.LastErr)
		}
	}
	return ""
}
