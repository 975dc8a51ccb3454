package faults

import (
	"fmt"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
)

// TestDrippingMemberHoldsFewFetchPlaces: a member writes rows naming six
// 2 MiB blobs that only it holds, and serves them just fast enough never
// to count as stalled (80 KiB/s: each takes 25 s). The server, with four
// fetch places, gives that member two of them at most: a phone's blob
// written meanwhile arrives at once, not after the drips.
func TestDrippingMemberHoldsFewFetchPlaces(t *testing.T) {
	t.Parallel()
	server := nodetest.Start(t, func(c *node.Config) { c.MaxFetches = 4 })
	phone, dripper := nodetest.Start(t), nodetest.Start(t)
	g := nodetest.CreateGroup(t, phone, "photos", syncnode.Normal)
	nodetest.Join(t, phone, server, g, syncnode.Server)
	nodetest.Join(t, phone, dripper, g, syncnode.Normal)
	testkit.WaitFor(t, 10*time.Second, "membership", func() bool { return len(server.Members(g)) == 3 })
	adv := newAdversary(dripper, drip)
	for i := range 6 {
		data := testkit.RandomBytes(2<<20, uint64(100+i))
		adv.hold(data)
		nodetest.PutBlobRow(t, dripper, g, fmt.Sprintf("photos/drip-%d", i), data)
	}
	testkit.WaitFor(t, 10*time.Second, "the server fetching the dripped blobs", func() bool { return adv.asked.Load() >= 2 })
	start := time.Now()
	ref := nodetest.PutBlobRow(t, phone, g, "photos/phone", testkit.RandomBytes(256<<10, 99))
	testkit.WaitFor(t, 15*time.Second, "the phone's blob on the server", func() bool { return server.HasBlob(ref) })
	took := time.Since(start)
	t.Logf("the phone's blob reached the server in %s beside %d dripping fetches", took, adv.asked.Load())
	if took > 5*time.Second {
		t.Fatalf("the phone's blob took %s beside the dripping member's", took)
	}
}
