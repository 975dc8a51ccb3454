package takeup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
)

// memStore lists n blobs, of which the gone ones are deleted after the
// listing saw them.
type memStore struct {
	refs []syncnode.BlobRef
	gone map[syncnode.BlobRef]bool
}

func (s memStore) List(fn func(blobstore.Info) error) error {
	for _, r := range s.refs {
		if err := fn(blobstore.Info{Ref: r, Size: 10}); err != nil {
			return err
		}
	}
	return nil
}

func (s memStore) ModTime(ref syncnode.BlobRef) (time.Time, error) {
	if s.gone[ref] {
		return time.Time{}, syncnode.ErrNotFound
	}
	return time.Unix(1, 0), nil
}

func refs(n int) []syncnode.BlobRef {
	var out []syncnode.BlobRef
	for i := range n {
		var h [syncnode.HashSize]byte
		copy(h[:], fmt.Sprint(i))
		out = append(out, syncnode.RefFromHash(h))
	}
	return out
}

// TestRunTakesUpEveryBlob: every blob is granted and announced; those
// deleted since the listing are not entered into the table, nor one
// whose grant failed (it stays out of every eviction plan); a failed
// grant does not stop the walk; the shares are checked after it.
func TestRunTakesUpEveryBlob(t *testing.T) {
	rs := refs(3*Chunk + 7)
	store := memStore{refs: rs, gone: map[syncnode.BlobRef]bool{rs[5]: true}}
	granted, announced, known := map[syncnode.BlobRef]bool{}, 0, map[syncnode.BlobRef]bool{}
	checked, locks := false, 0
	res, err := Run(t.Context(), Deps{Store: store,
		Grant: func(ref syncnode.BlobRef) error {
			granted[ref] = true
			if ref == rs[9] {
				return errors.New("disk full")
			}
			return nil
		},
		Announce:    func(syncnode.BlobRef) { announced++ },
		Lock:        func(syncnode.BlobRef) func() { locks++; return func() { locks-- } },
		Know:        func(ref syncnode.BlobRef, _ time.Time, _ int64) { known[ref] = locks == 1 },
		CheckShares: func() error { checked = true; return nil },
		Log:         slog.New(slog.DiscardHandler)})
	if err == nil || res.Blobs != len(rs) {
		t.Fatalf("walk: %d blobs, %v; want %d and the grant's error", res.Blobs, err, len(rs))
	}
	if len(granted) != len(rs) || announced != len(rs) || !checked {
		t.Fatalf("granted %d, announced %d of %d, shares checked %v", len(granted), announced, len(rs), checked)
	}
	if _, in := known[rs[9]]; len(known) != len(rs)-2 || in || known[rs[5]] {
		t.Fatalf("%d blobs entered into the table, want every one but the deleted one and the one whose grant failed", len(known))
	}
	for ref, locked := range known {
		if !locked {
			t.Fatalf("%s entered without its lock", ref)
		}
	}
}

// TestRunStopsWithItsContext: a node that closes stops the walk; the
// shares are not checked on half a walk.
func TestRunStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	n, checked := 0, false
	_, err := Run(ctx, Deps{Store: memStore{refs: refs(4 * Chunk)},
		Grant: func(syncnode.BlobRef) error {
			if n++; n == Chunk+3 {
				cancel()
			}
			return nil
		},
		Announce:    func(syncnode.BlobRef) {},
		Lock:        func(syncnode.BlobRef) func() { return func() {} },
		Know:        func(syncnode.BlobRef, time.Time, int64) {},
		CheckShares: func() error { checked = true; return nil },
		Log:         slog.New(slog.DiscardHandler)})
	if !errors.Is(err, context.Canceled) || n != Chunk+3 || checked {
		t.Fatalf("walk after its context ended: %v after %d blobs, shares checked %v", err, n, checked)
	}
}
