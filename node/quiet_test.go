package node

import (
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/ownership"
)

// TestIdleNodesCommitNothing: once a device's blob is on the server with
// its shares, rounds keep running between the two and bring nothing; then
// neither node commits anything to its database (nor syncs it), round
// after round. Each round used to write the group's record again, for a
// server time a round later and a distance a little nearer the server.
func TestIdleNodesCommitNothing(t *testing.T) {
	t.Parallel()
	nodes, g := meshWith(t, true, func(*Config) {}, syncnode.Normal, syncnode.Server)
	dev, srv := nodes[0], nodes[1]
	ref := putBlobRow(t, dev, g, "photos/a", 64<<10, 5)
	testkit.WaitFor(t, 20*time.Second, "the server to hold the blob with its shares", func() bool {
		return srv.HasBlob(ref) && sharesIn(t, srv, ref, g) == ownership.CreatorShares
	})
	version := func(n *Node) uint64 {
		txn := n.db.NewTransaction(false)
		defer txn.Discard()
		return txn.ReadTs()
	}
	versions := func() [2]uint64 { return [2]uint64{version(dev), version(srv)} }
	// The last hand-offs and their records settle first.
	last, since := versions(), time.Now()
	testkit.WaitFor(t, 30*time.Second, "a second with no commit on either node", func() bool {
		if v := versions(); v != last {
			last, since = v, time.Now()
		}
		return time.Since(since) > time.Second
	})
	msgs, start := dev.Stats().SyncMessages+srv.Stats().SyncMessages, time.Now()
	testkit.WaitFor(t, 20*time.Second, "ten rounds' time, rounds running", func() bool {
		if v := versions(); v != last {
			t.Fatalf("an idle node committed: versions %v, then %v", last, v)
		}
		return time.Since(start) > 10*testConfig("").SyncInterval &&
			dev.Stats().SyncMessages+srv.Stats().SyncMessages >= msgs+10
	})
}
