package node

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
)

// TestEvictRacingShareTransferKeepsACopy stops a member's eviction after
// its last check, right before it deletes its copy, and there lets it take
// a leaf's shares of that blob. Accepting shares and deleting the copy are
// exclusive: either the transfer waits and is refused (the leaf keeps its
// shares and its copy), or the copy stays. Never shares without a copy.
func TestEvictRacingShareTransferKeepsACopy(t *testing.T) {
	// Both evict every blob they may.
	nodes, g := meshWith(t, true, func(c *Config) { c.BlobBudget = 1 }, syncnode.Leaf, syncnode.Normal)
	leaf, member := nodes[0], nodes[1]
	// The leaf's own hand-offs stay out of the way: the test makes the
	// transfer itself, at the worst moment.
	// The key is set only while no hand-off runs: a running one deletes
	// it when it ends, and the next round would hand the blob off.
	testkit.WaitFor(t, 10*time.Second, "no hand-off running", func() bool {
		_, ok := leaf.handoffs.Reserve(g, member.ID())
		return ok
	})
	ref := putBlobRow(t, leaf, g, "photos/race.jpg", 128<<10, 9)
	// The member gets the blob (fetch alone takes no shares) and learns
	// the row, so its copy is referenced and evictable.
	testkit.WaitFor(t, 10*time.Second, "the row at the member", func() bool {
		sp, err := member.Signpost(ref)
		return err == nil && len(sp.Groups()) > 0
	})
	took := make(chan error, 1)
	hook := func(r syncnode.BlobRef) {
		if r != ref {
			return
		}
		member.custody.Hooks.BeforeDelete.Store(nil)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := member.handoffs.Shares().Take(ctx, leaf.ID(), ref, g)
			took <- err
		}()
		// Give the transfer every chance to land before the deletion.
		select {
		case <-took:
			took <- nil
		case <-time.After(300 * time.Millisecond):
		}
	}
	member.custody.Hooks.BeforeDelete.Store(&hook)
	if _, err := fetchFrom(t.Context(), member, ref, leaf.ID()); err != nil {
		t.Fatal(err)
	}
	// The pass after the fetch may get there first; either way one
	// reaches the hook.
	rep, err := member.Evict()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-took:
	case <-time.After(10 * time.Second):
		t.Fatalf("the eviction never reached its deletion (evicted %v)", rep.Evicted)
	}
	held := member.HasBlob(ref)
	if sh := sharesIn(t, member, ref, g); sh > 0 && !held {
		t.Fatalf("member holds %d shares and no copy (evicted %v)", sh, rep.Evicted)
	}
	if got := totalShares(t, nodes, ref, g); got != 2 {
		t.Fatalf("share total %d, want 2", got)
	}
	// The leaf, over budget too, evicts what it may: a copy remains.
	if _, err := leaf.Evict(); err != nil {
		t.Fatal(err)
	}
	if !leaf.HasBlob(ref) && !member.HasBlob(ref) {
		t.Fatal("no copy of the blob is left")
	}
	for _, n := range nodes {
		if sh := sharesIn(t, n, ref, g); sh > 0 && !n.HasBlob(ref) {
			t.Fatalf("%s holds %d shares and no copy", n.ID(), sh)
		}
	}
}

// A fetched copy becomes visible when its file is renamed into place and
// durable only once its directory is synced after: shares accepted in
// between would outlive the copy through a power loss. The commit holds
// the blob's lock, which accepting shares takes, so nothing that takes
// shares sees the copy before the commit has finished.
func TestNoShareAcceptedBeforeTheCommitEnds(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal)
	a, b := nodes[0], nodes[1]
	ref := putBlobRow(t, a, g, "photos/commit.jpg", 300<<10, 12)
	inCommit, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	t.Cleanup(let) // before the nodes close, whatever fails
	hook := func(r syncnode.BlobRef) {
		if r != ref {
			return
		}
		close(inCommit)
		<-release
	}
	b.custody.Hooks.InCommit.Store(&hook)
	fetched := make(chan error, 1)
	go func() {
		_, err := fetchFrom(context.Background(), b, ref, a.ID())
		fetched <- err
	}()
	select {
	case <-inCommit:
	case err := <-fetched:
		t.Fatalf("the fetch ended without committing through the node: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the fetch never reached its commit")
	}
	// The copy is visible now; a share acceptance must wait.
	accepted := make(chan bool, 1)
	go func() {
		b.handoffs.WithCopy(ref, func(held bool) error { accepted <- held; return nil })
	}()
	select {
	case <-accepted:
		t.Fatal("shares could be accepted for the copy while its commit was still running")
	case <-time.After(200 * time.Millisecond):
	}
	let()
	if err := <-fetched; err != nil {
		t.Fatal(err)
	}
	if held := <-accepted; !held {
		t.Fatal("the copy was not held once its commit ended")
	}
}
