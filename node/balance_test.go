package node

import (
	"bytes"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
)

// TestFullServerLeavesBlobsToOthers: a server past its budget does not
// fetch a blob that another server already holds for a group that wants
// one copy, and does fetch one whose group wants two while only one other
// server holds it. A server with room fetches everything.
func TestFullServerLeavesBlobsToOthers(t *testing.T) {
	t.Parallel()
	nodes, one := mesh(t, true, syncnode.Normal, syncnode.Server)
	dev, roomy := nodes[0], nodes[1]
	two, err := dev.CreateGroupWith(GroupOptions{Name: "two", Prefixes: []string{"two/"}, Private: true, DevType: syncnode.Normal, Copies: 2})
	if err != nil {
		t.Fatal(err)
	}
	join(t, dev, roomy, two.ID, syncnode.Server)
	refOne := putBlobRow(t, dev, one, "photos/a", 64<<10, 31)
	refTwo := putBlobRow(t, dev, two.ID, "two/a", 64<<10, 32)
	// The device's shares gone to the roomy server: no hand-off is left
	// to bring the blobs to the next one.
	testkit.WaitFor(t, 20*time.Second, "the roomy server to hold both blobs with their shares", func() bool {
		return roomy.HasBlob(refOne) && roomy.HasBlob(refTwo) && sharesIn(t, dev, refOne, one) == 0 && sharesIn(t, dev, refTwo, two.ID) == 0
	})

	// A second server, full: it holds a blob of its own past its budget.
	cfg := testConfig(t.TempDir())
	cfg.BlobBudget = 1
	// Its first looks at the blobs come as it joins, before it has heard
	// from the other server: the backoff before it looks again is a
	// server's, not a test's 50 ms.
	fc := *cfg.Fetcher
	fc.BaseDelay = 500 * time.Millisecond
	cfg.Fetcher = &fc
	full, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { full.Close() })
	if _, err := full.PutBlob(t.Context(), bytes.NewReader([]byte("filling the budget"))); err != nil {
		t.Fatal(err)
	}
	join(t, dev, full, one, syncnode.Server)
	join(t, dev, full, two.ID, syncnode.Server)
	testkit.WaitFor(t, 30*time.Second, "the full server to fetch the blob its group wants two copies of", func() bool {
		return full.HasBlob(refTwo)
	})
	testkit.WaitFor(t, 30*time.Second, "the full server to know the other blob and settle its queue", func() bool {
		sp, err := full.Signpost(refOne)
		return err == nil && len(sp.Groups()) > 0 && full.Stats().FetchQueue == 0
	})
	if full.HasBlob(refOne) {
		t.Fatal("a full server fetched a blob another server already holds for a group that wants one copy")
	}
}
