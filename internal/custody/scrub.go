package custody

import (
	"errors"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
)

// scrubRate returns the bytes per second at which a scrub pass covers
// total bytes in period, at least 64 KiB/s and at most maxRate. Pure.
func scrubRate(total int64, period time.Duration, maxRate int64) int64 {
	rate := int64(float64(total) / period.Seconds())
	return min(max(rate, 64<<10), maxRate)
}

// Watched returns the blob store as the blob service and the user read
// it: a read that finds a copy damaged hands it to custody, which stops
// claiming it and restores it from a peer.
func (c *Custody) Watched() blobstore.Store { return watchedStore{c.blobs, c} }

// watchedStore is the blob store as the blob service and the user see it:
// a read that finds the copy damaged hands it to the node, which stops
// claiming it and restores it from a peer.
type watchedStore struct {
	blobstore.Store
	c *Custody
}

func (w watchedStore) Open(ref syncnode.BlobRef) (blobstore.Reader, error) {
	r, err := w.Store.Open(ref)
	if err != nil {
		w.c.checkDamage(ref, err)
		return nil, err
	}
	return watchedReader{r, ref, w.c}, nil
}

func (w watchedStore) Outboard(ref syncnode.BlobRef) ([]byte, error) {
	ob, err := w.Store.Outboard(ref)
	w.c.checkDamage(ref, err)
	return ob, err
}

type watchedReader struct {
	blobstore.Reader
	ref syncnode.BlobRef
	c   *Custody
}

func (w watchedReader) ReadAt(p []byte, off int64) (int, error) {
	k, err := w.Reader.ReadAt(p, off)
	w.c.checkDamage(w.ref, err)
	return k, err
}

// checkDamage hands ref to damaged if err says its copy is damaged.
func (c *Custody) checkDamage(ref syncnode.BlobRef, err error) {
	if errors.Is(err, blobstore.ErrDamaged) {
		c.work.Go(func() { c.handleDamage(ref, err) })
	}
}

// handleDamage handles a copy found damaged: it is deleted and no longer
// claimed or provided; its shares stay, pinned while a verified copy is
// restored from a peer (I4: damaged bytes are never served or trusted).
func (c *Custody) handleDamage(ref syncnode.BlobRef, cause error) {
	unlock := c.locks.lock(ref)
	defer unlock()
	// Only a copy found damaged again, now, whole: a concurrent repair
	// may have won, and a store that fails to answer (a timeout, a 5xx,
	// an answer cut short) has shown nothing about the copy. Deleting on
	// its word would lose what may be the only copy.
	if err := c.confirmDamage(ref); err != nil {
		c.log.Warn("copy not confirmed damaged; kept", "blob", ref, "cause", cause, "err", err)
		return
	}
	c.damaged.Add(1)
	c.log.Error("stored copy is damaged; deleted, to be restored from a peer", "blob", ref, "err", cause)
	if err := c.Delete(ref); err != nil && !errors.Is(err, syncnode.ErrNotFound) {
		c.log.Error("damaged copy not deleted", "blob", ref, "err", err)
	}
	if pinned, _ := c.UserPinned(ref); pinned || c.rules.Wanted(ref) {
		c.Restore(ref)
	}
}

// errNotDamaged reports a copy that a second look found whole.
var errNotDamaged = errors.New("custody: the copy verifies")

// confirmDamage reads ref's copy whole again, verifying it, and returns
// nil only if that read finds it damaged (its tree or its bytes do not
// match). A copy that verifies, one gone already, or a read that failed
// otherwise is not confirmed.
func (c *Custody) confirmDamage(ref syncnode.BlobRef) error {
	if _, err := c.blobs.Outboard(ref); err != nil {
		if errors.Is(err, blobstore.ErrDamaged) {
			return nil
		}
		return err
	}
	r, err := c.blobs.Open(ref)
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

// errClosed stops a listing once the node closes.
var errClosed = errors.New("custody: closed")

// runScrub re-verifies every held blob, pass after pass, at a pace that
// covers the store in ScrubPeriod without reading faster than ScrubMaxRate.
func (c *Custody) runScrub() {
	if c.cfg.ScrubPeriod < 0 {
		return
	}
	buf := make([]byte, 1<<20)
	for c.ctx.Err() == nil {
		start := time.Now()
		// The pace comes from the bytes the LRU table knows, asked again
		// for each blob (after a restart the walk of the store fills the
		// table as the first pass runs), and the pass scrubs each blob
		// as the listing reaches it: no list of the store is kept.
		err := c.blobs.List(func(i blobstore.Info) error {
			_, total := c.Held()
			rate := scrubRate(max(total, i.Size), c.cfg.ScrubPeriod, c.cfg.ScrubMaxRate)
			if !c.scrubOne(i.Ref, buf, rate) {
				return errClosed
			}
			return nil
		})
		if errors.Is(err, errClosed) {
			return
		}
		if err != nil {
			c.log.Warn("scrub pass cut short: the store cannot be listed", "err", err)
		} else {
			c.scrubPasses.Add(1)
		}
		// Wait out what is left of the period (at least a second), so an
		// empty or small store is not re-read in a loop.
		rest := max(c.cfg.ScrubPeriod-time.Now().Sub(start), time.Second)
		if !c.work.Sleep(rest) {
			return
		}
	}
}

// scrubOne verifies ref at rate bytes per second; false once the node
// closes.
func (c *Custody) scrubOne(ref syncnode.BlobRef, buf []byte, rate int64) bool {
	r, err := c.Watched().Open(ref)
	if err != nil {
		return c.ctx.Err() == nil // damaged (handled by the store) or gone
	}
	defer r.Close()
	for off := int64(0); off < r.Size(); {
		k := min(int64(len(buf)), r.Size()-off)
		if _, err := r.ReadAt(buf[:k], off); err != nil {
			return c.ctx.Err() == nil
		}
		off += k
		c.scrubbed.Add(k)
		if !c.work.Sleep(time.Duration(float64(k) / float64(rate) * float64(time.Second))) {
			return false
		}
	}
	return true
}
