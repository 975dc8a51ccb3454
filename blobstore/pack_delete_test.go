package blobstore_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
)

// Two deletes of one packed blob: the second waits for the first to be
// durable, and when the first's batch fails, deletes the blob itself:
// the blob is gone after the last delete returns.
func TestSecondDeleteWaitsForTheFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	refs, _ := fillFirstPack(t, dir, 2, 150, func(int) bool { return false })
	x := refs[0]
	entered, release := make(chan struct{}), make(chan struct{})
	var failed atomic.Bool
	apply := func(b blobstore.PackBatch) error {
		for _, c := range b.Changes {
			if c.Delete && c.Entry.Ref == x && failed.CompareAndSwap(false, true) {
				close(entered)
				<-release
				return errInjected // the first delete's batch only
			}
		}
		return nil
	}
	s := openHooked(t, dir, nil, apply)
	defer s.close()
	var releaseOnce sync.Once
	let := func() { releaseOnce.Do(func() { close(release) }) }
	defer let() // before the close, which waits for the batch held
	first := make(chan error, 1)
	go func() { first <- s.Delete(x) }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first delete's batch never reached the index")
	}
	second := make(chan error, 1)
	go func() { second <- s.Delete(x) }()
	select {
	case err := <-second:
		t.Fatalf("the second delete returned (%v) while the first was still syncing", err)
	case <-time.After(200 * time.Millisecond):
	}
	let()
	ferr, serr := <-first, <-second
	_, stat := s.Stat(x)
	t.Logf("first delete: %v; second delete: %v; Stat after both: %v", ferr, serr, stat)
	if ferr == nil || serr != nil || !errors.Is(stat, syncnode.ErrNotFound) {
		t.Errorf("the first delete failed (%v), the second ended with %v, and the blob is stored after both (Stat: %v)", ferr, serr, stat)
	}
}
