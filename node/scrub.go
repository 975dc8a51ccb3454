package node

import (
	"errors"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
)

// Scrub defaults: the whole store re-verified every 7 days, reading at most
// 16 MiB/s.
const (
	DefaultScrubPeriod  = 7 * 24 * time.Hour
	DefaultScrubMaxRate = 16 << 20
)

// scrubRate returns the bytes per second at which a scrub pass covers
// total bytes in period, at least 64 KiB/s and at most maxRate. Pure.
func scrubRate(total int64, period time.Duration, maxRate int64) int64 {
	rate := int64(float64(total) / period.Seconds())
	return min(max(rate, 64<<10), maxRate)
}

// watchedStore is the blob store as the blob service and the user see it:
// a read that finds the copy damaged hands it to the node, which stops
// claiming it and restores it from a peer.
type watchedStore struct {
	blobstore.Store
	n *Node
}

func (w watchedStore) Open(ref syncnode.BlobRef) (blobstore.Reader, error) {
	r, err := w.Store.Open(ref)
	if err != nil {
		w.n.checkDamage(ref, err)
		return nil, err
	}
	return watchedReader{r, ref, w.n}, nil
}

func (w watchedStore) Outboard(ref syncnode.BlobRef) ([]byte, error) {
	ob, err := w.Store.Outboard(ref)
	w.n.checkDamage(ref, err)
	return ob, err
}

type watchedReader struct {
	blobstore.Reader
	ref syncnode.BlobRef
	n   *Node
}

func (w watchedReader) ReadAt(p []byte, off int64) (int, error) {
	k, err := w.Reader.ReadAt(p, off)
	w.n.checkDamage(w.ref, err)
	return k, err
}

// checkDamage hands ref to damaged if err says its copy is damaged.
func (n *Node) checkDamage(ref syncnode.BlobRef, err error) {
	if errors.Is(err, blobstore.ErrDamaged) {
		n.goRun(func() { n.damaged(ref, err) })
	}
}

// damaged handles a copy found damaged: it is deleted and no longer
// claimed or provided; its shares stay, pinned while a verified copy is
// restored from a peer (I4: damaged bytes are never served or trusted).
func (n *Node) damaged(ref syncnode.BlobRef, cause error) {
	unlock := n.locks.lock(ref)
	defer unlock()
	// Only a copy found damaged again, now, whole: a concurrent repair
	// may have won, and a store that fails to answer (a timeout, a 5xx,
	// an answer cut short) has shown nothing about the copy. Deleting on
	// its word would lose what may be the only copy.
	if err := n.confirmDamage(ref); err != nil {
		n.log.Warn("copy not confirmed damaged; kept", "blob", ref, "cause", cause, "err", err)
		return
	}
	n.stats.damaged.Add(1)
	n.log.Error("stored copy is damaged; deleted, to be restored from a peer", "blob", ref, "err", cause)
	if err := n.deleteCopy(ref); err != nil && !errors.Is(err, syncnode.ErrNotFound) {
		n.log.Error("damaged copy not deleted", "blob", ref, "err", err)
	}
	sh, _ := n.ledger.Shares(ref)
	if len(sh) > 0 || len(n.groupsOf(ref)) > 0 {
		n.restoreLater(ref)
	}
}

// errNotDamaged reports a copy that a second look found whole.
var errNotDamaged = errors.New("node: the copy verifies")

// confirmDamage reads ref's copy whole again, verifying it, and returns
// nil only if that read finds it damaged (its tree or its bytes do not
// match). A copy that verifies, one gone already, or a read that failed
// otherwise is not confirmed.
func (n *Node) confirmDamage(ref syncnode.BlobRef) error {
	if _, err := n.blobs.Outboard(ref); err != nil {
		if errors.Is(err, blobstore.ErrDamaged) {
			return nil
		}
		return err
	}
	r, err := n.blobs.Open(ref)
	if err != nil {
		if errors.Is(err, blobstore.ErrDamaged) {
			return nil
		}
		return err
	}
	defer r.Close()
	switch err := verifyAll(r); {
	case err == nil:
		return errNotDamaged
	case errors.Is(err, blobstore.ErrDamaged):
		return nil
	default:
		return err
	}
}

// verifyAll reads r whole, verifying it.
func verifyAll(r blobstore.Reader) error {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < r.Size(); off += int64(len(buf)) {
		if _, err := r.ReadAt(buf[:min(int64(len(buf)), r.Size()-off)], off); err != nil {
			return err
		}
	}
	return nil
}

// runScrub re-verifies every held blob, pass after pass, at a pace that
// covers the store in ScrubPeriod without reading faster than ScrubMaxRate.
func (n *Node) runScrub() {
	if n.cfg.ScrubPeriod < 0 {
		return
	}
	buf := make([]byte, 1<<20)
	for n.ctx.Err() == nil {
		start := time.Now()
		var refs []blobstore.Info
		var total int64
		n.blobs.List(func(i blobstore.Info) error { refs = append(refs, i); total += i.Size; return nil })
		rate := scrubRate(total, n.cfg.ScrubPeriod, n.cfg.ScrubMaxRate)
		for _, i := range refs {
			if !n.scrubOne(i.Ref, buf, rate) {
				return
			}
		}
		n.stats.scrubPasses.Add(1)
		// Wait out what is left of the period (at least a second), so an
		// empty or small store is not re-read in a loop.
		rest := max(n.cfg.ScrubPeriod-time.Now().Sub(start), time.Second)
		if !n.sleep(rest) {
			return
		}
	}
}

// scrubOne verifies ref at rate bytes per second; false once the node
// closes.
func (n *Node) scrubOne(ref syncnode.BlobRef, buf []byte, rate int64) bool {
	r, err := n.store.Open(ref)
	if err != nil {
		return n.ctx.Err() == nil // damaged (handled by the store) or gone
	}
	defer r.Close()
	for off := int64(0); off < r.Size(); {
		k := min(int64(len(buf)), r.Size()-off)
		if _, err := r.ReadAt(buf[:k], off); err != nil {
			return n.ctx.Err() == nil
		}
		off += k
		n.stats.scrubbed.Add(k)
		if !n.sleep(time.Duration(float64(k) / float64(rate) * float64(time.Second))) {
			return false
		}
	}
	return true
}

// sleep waits d on the node's clock; false if the node closed meanwhile.
func (n *Node) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	select {
	case <-n.ctx.Done():
		t.Stop()
		return false
	case <-t.C:
		return true
	}
}
