package node

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/holds"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/testkit"
)

// TestGrantCutShortRestoredAfterOpen: a stop fell between storing a
// photo and granting its creator shares (the grant's record is gone from
// the database). After the open, a removal right away is refused for the
// shares, whether or not the walk of the store has reached the blob, and
// the walk restores the shares of every other blob so cut short.
func TestGrantCutShortRestoredAfterOpen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := openNode(t, dir)
	spec, err := n.CreateGroup("photos", []string{"photos/"}, false, syncnode.Normal)
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	var refs []syncnode.BlobRef
	for i := range 3 {
		refs = append(refs, putBlobRow(t, n, spec.ID, "photos/"+string(rune('a'+i)), 4<<10, uint64(i)+1))
	}
	// The grants were never written: their records are dropped.
	err = n.db.Update(func(txn *badger.Txn) error {
		for _, ref := range refs {
			h := ref.Hash()
			if err := txn.Delete(kv.Key(kv.Shares, h[:])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	// The walk waits until the removal has been refused.
	release := make(chan struct{})
	releaseWalk := sync.OnceFunc(func() { close(release) })
	cfg := testConfig(dir)
	cfg.takeUpStarts = func() { <-release }
	n, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	defer releaseWalk()
	var held *holds.Error
	if err := n.RemoveBlob(refs[0]); !errors.As(err, &held) {
		t.Fatalf("removal right after the open: %v, want it refused for the creator's shares", err)
	}
	if !n.HasBlob(refs[0]) {
		t.Fatal("the photo is gone")
	}
	if st := n.Stats(); !st.TakingUp || st.Blobs != 0 {
		t.Fatalf("stats while the walk waits: taking up %v, %d blobs; want true and none reached", st.TakingUp, st.Blobs)
	}
	releaseWalk()
	testkit.WaitFor(t, 10*time.Second, "the walk to end and count every blob", func() bool {
		st := n.Stats()
		return !st.TakingUp && st.Blobs == len(refs) && st.BlobBytes == int64(len(refs))*4<<10
	})
	testkit.WaitFor(t, 10*time.Second, "the walk to restore the creator's shares", func() bool {
		for _, ref := range refs[1:] {
			if sh, err := n.ledger.Shares(ref); err != nil || sh[spec.ID] == 0 {
				return false
			}
		}
		return true
	})
}
