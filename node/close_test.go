package node

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
)

// TestCallsRacingClose: an app calls the node from several goroutines
// (rounds, writes, puts, fetches, evictions) while another closes it.
// No call may touch the stores once they are closed (badger panics on a
// write racing its close): each either finishes before Close returns or
// fails with ErrClosed.
func TestCallsRacingClose(t *testing.T) {
	admin := openNode(t, t.TempDir())
	t.Cleanup(func() { admin.Close() })
	n := openNode(t, t.TempDir())
	g, err := admin.CreateGroup("race", []string{"race/"}, true, syncnode.Normal)
	if err != nil {
		t.Fatal(err)
	}
	join(t, admin, n, g.ID, syncnode.Normal)
	ref := syncnode.RefFromHash([32]byte{9})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	calls := []func(i int) error{
		func(int) error { return n.SyncNow(g.ID) },
		func(i int) error { _, err := n.PutRow(g.ID, "race/k", []byte{0xa1, byte('a' + i%26)}); return err },
		func(i int) error {
			_, err := n.PutBlob(context.Background(), bytes.NewReader([]byte{byte(i), 1, 2}))
			return err
		},
		func(int) error {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			_, err := n.FetchBlob(ctx, ref, FetchOptions{})
			return err
		},
		func(int) error { _, err := n.Evict(); return err },
	}
	for _, call := range calls {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				call(i)
			}
		})
	}
	time.Sleep(100 * time.Millisecond) // the calls under way
	if err := n.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	for i, call := range calls {
		if err := call(0); !errors.Is(err, ErrClosed) {
			t.Errorf("call %d after Close: %v, want ErrClosed", i, err)
		}
	}
	close(stop)
	wg.Wait()
}
