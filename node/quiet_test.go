package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
)

// TestIdleNodesCommitNothing: two devices with a row each keep running
// rounds that bring nothing; then neither commits anything to its
// database (nor syncs it), round after round. Each round used to write
// the group's record again. With no server in the group the devices'
// priorities stay as they are: with one, a device's distance keeps
// nearing its target for dozens of rounds, and the record is written
// each time it moved by DistanceLag (syncgroup's TestIdleSaveWritesNothing
// checks that rule).
func TestIdleNodesCommitNothing(t *testing.T) {
	t.Parallel()
	nodes, g := meshWith(t, true, func(*Config) {}, syncnode.Normal, syncnode.Normal)
	a, b := nodes[0], nodes[1]
	for i, n := range nodes {
		if _, err := n.PutRow(g, fmt.Sprintf("photos/%d", i), []byte{0xa1, 'x'}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 20*time.Second, "each device to hold both rows", func() bool {
		for _, n := range nodes {
			for i := range nodes {
				if _, ok, _ := n.GetRow(g, fmt.Sprintf("photos/%d", i)); !ok {
					return false
				}
			}
		}
		return true
	})
	version := func(n *Node) uint64 {
		txn := n.db.NewTransaction(false)
		defer txn.Discard()
		return txn.ReadTs()
	}
	versions := func() [2]uint64 { return [2]uint64{version(a), version(b)} }
	// The last records (the event feed's, say) settle first.
	last, since := versions(), time.Now()
	testkit.WaitFor(t, 30*time.Second, "a second with no commit on either node", func() bool {
		if v := versions(); v != last {
			last, since = v, time.Now()
		}
		return time.Since(since) > time.Second
	})
	msgs, start := a.Stats().SyncMessages+b.Stats().SyncMessages, time.Now()
	testkit.WaitFor(t, 20*time.Second, "ten rounds' time, rounds running", func() bool {
		if v := versions(); v != last {
			t.Fatalf("an idle node committed: versions %v, then %v", last, v)
		}
		return time.Since(start) > 10*testConfig("").SyncInterval &&
			a.Stats().SyncMessages+b.Stats().SyncMessages >= msgs+10
	})
}
