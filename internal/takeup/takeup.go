// Package takeup takes up, in the background and paced, what a node held
// when it stopped: each blob's creator shares that a stop cut short, its
// place in the least-recently-used table and its DHT announcement, then
// the shares held without a verified copy.
//
// A node opens without walking its store: it serves and syncs while the
// walk runs. Nothing the walk has not reached can be lost meanwhile: a
// blob the table does not know is never an eviction candidate, and a
// removal restores the creator's shares of its blob itself first.
package takeup

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
)

// Store is the blob store as the walk reads it.
type Store interface {
	List(fn func(blobstore.Info) error) error
	ModTime(ref syncnode.BlobRef) (time.Time, error)
}

// Deps are what the walk takes each blob up into.
type Deps struct {
	Store Store
	// Grant restores the creator's shares of a held blob that a stop cut
	// short.
	Grant func(ref syncnode.BlobRef) error
	// Announce provides a blob in the DHT if its groups allow it.
	Announce func(ref syncnode.BlobRef)
	// Lock takes ref's lock, which deleting a copy takes too.
	Lock func(ref syncnode.BlobRef) (unlock func())
	// Know enters a held blob into the least-recently-used table unless
	// a use since the open entered it already.
	Know func(ref syncnode.BlobRef, lastUse time.Time, size int64)
	// CheckShares reports and restores the copies of blobs whose shares
	// are held without one, after the walk.
	CheckShares func() error
	// Starts, if not nil, runs before the walk starts.
	Starts func()
	Log    *slog.Logger
}

// Chunk is how many blobs the walk takes up between two pauses.
const Chunk = 256

// Result is what a walk took up.
type Result struct {
	Blobs int
	Took  time.Duration
}

// Run walks the store until it ends or ctx does. After each Chunk blobs
// it pauses as long as the chunk took, so that it takes at most half of
// one core from a node that is serving.
func Run(ctx context.Context, d Deps) (Result, error) {
	if d.Starts != nil {
		d.Starts()
	}
	start := time.Now()
	var res Result
	var errs []error
	chunk := time.Now()
	err := d.Store.List(func(i blobstore.Info) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		d.Announce(i.Ref)
		// A blob whose grant could not be restored stays out of the
		// LRU table, so out of every eviction plan.
		if err := d.Grant(i.Ref); err != nil {
			errs = append(errs, err)
		} else {
			know(d, i)
		}
		res.Blobs++
		if res.Blobs%Chunk == 0 {
			t := time.NewTimer(time.Since(chunk))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
			chunk = time.Now()
		}
		return nil
	})
	if err == nil {
		err = d.CheckShares()
	}
	res.Took = time.Since(start)
	return res, errors.Join(append(errs, err)...)
}

// know enters i into the table under its lock: a copy deleted since the
// listing is not entered.
func know(d Deps, i blobstore.Info) {
	unlock := d.Lock(i.Ref)
	defer unlock()
	if t, err := d.Store.ModTime(i.Ref); err == nil {
		d.Know(i.Ref, t, i.Size)
	}
}
