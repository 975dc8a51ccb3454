package faults

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/netsplit"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
)

// split cuts nodes into the given sides.
func split(pt *netsplit.Partition, nodes []*node.Node, side []int) {
	var ids []peer.ID
	var hosts []host.Host
	for _, n := range nodes {
		ids, hosts = append(ids, n.ID()), append(hosts, nodetest.Host(n))
	}
	pt.Split(ids, hosts, side)
}

// TestPartitionsHeal splits four devices and two servers into random
// sides again and again; on each side devices write rows with new blobs
// and fight over one shared key. After each heal every node must hold the
// same rows (the same winner for the shared key), every server must hold
// every blob (fetches resume across the healed cut), and every blob's
// shares must add up to 2.
func TestPartitionsHeal(t *testing.T) {
	t.Parallel()
	cycles, perDevice := 2, 2
	if *long {
		cycles, perDevice = 8, 4
	}
	seed := seedOf(t)
	r := rand.New(rand.NewPCG(seed, 3))
	pt := &netsplit.Partition{}
	mk := func() *node.Node {
		g := pt.Gater()
		n := nodetest.Start(t, func(c *node.Config) { c.Gater = g })
		g.SetSelf(n.ID())
		return n
	}
	var devices, servers []*node.Node
	for range 4 {
		devices = append(devices, mk())
	}
	for range 2 {
		servers = append(servers, mk())
	}
	all := append(slices.Clone(devices), servers...)
	g := nodetest.CreateGroup(t, devices[0], "f", syncnode.Normal)
	for _, d := range devices[1:] {
		nodetest.Join(t, devices[0], d, g, syncnode.Normal)
	}
	for _, s := range servers {
		nodetest.Join(t, devices[0], s, g, syncnode.Server)
	}
	testkit.WaitFor(t, 20*time.Second, "every node to know every member", func() bool {
		for _, n := range all {
			if len(n.Members(g)) != len(all) {
				return false
			}
		}
		return true
	})

	var refs []syncnode.BlobRef
	blob := 0
	for c := range cycles {
		// Two non-empty sides, a device on each.
		side := make([]int, len(all))
		for i := range side {
			side[i] = r.IntN(2)
		}
		side[0], side[1+r.IntN(3)] = 0, 1
		split(pt, all, side)
		var sides [2][]string
		for i, s := range side {
			name := fmt.Sprintf("d%d", i)
			if i >= len(devices) {
				name = fmt.Sprintf("s%d", i-len(devices))
			}
			sides[s] = append(sides[s], name)
		}
		for i, d := range devices {
			for k := range perDevice {
				blob++
				key := fmt.Sprintf("f/c%d-d%d-%d", c, i, k)
				refs = append(refs, nodetest.PutBlobRow(t, d, g, key, testkit.RandomBytes(4<<10+blob*1000, uint64(blob))))
			}
			v, _ := msgpack.Marshal(fmt.Sprintf("cycle %d device %d", c, i))
			if _, err := d.PutRow(g, "f/shared", v); err != nil {
				t.Fatal(err)
			}
		}
		// Rows spread on each side, not across.
		for i := range devices {
			key := fmt.Sprintf("f/c%d-d%d-0", c, i)
			for j, o := range all {
				if side[j] != side[i] {
					continue
				}
				testkit.WaitFor(t, 20*time.Second, "rows to spread within a side", func() bool {
					_, ok, _ := o.GetRow(g, key)
					return ok
				})
			}
			for j, o := range all {
				if side[j] != side[i] {
					if _, ok, _ := o.GetRow(g, key); ok {
						t.Fatalf("cycle %d: a row crossed the partition %v", c, sides)
					}
				}
			}
		}

		pt.Heal()
		start := time.Now()
		testkit.WaitFor(t, 60*time.Second, "rows to converge after the heal", func() bool {
			want := rowsOf(t, all[0], g)
			for _, n := range all[1:] {
				if rowsOf(t, n, g) != want {
					return false
				}
			}
			return true
		})
		converged := time.Since(start)
		testkit.WaitFor(t, 60*time.Second, "every server to hold every blob with shares adding up", func() bool {
			for _, ref := range refs {
				for _, s := range servers {
					if !s.HasBlob(ref) {
						return false
					}
				}
				if nodetest.TotalShares(t, all, ref, g) != 2 {
					return false
				}
			}
			return true
		})
		t.Logf("cycle %d: sides %v; rows converged %v after the heal, %d blobs on both servers %v after it, shares 2 each",
			c, sides, converged.Round(time.Millisecond), len(refs), time.Since(start).Round(time.Millisecond))
	}
}

// rowsOf is n's view of the group's rows: key, writer and value.
func rowsOf(t *testing.T, n *node.Node, g syncnode.GroupID) string {
	rows, err := n.ListRows(g, "f/")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%s %s %x\n", r.Key, r.Writer, r.Value)
	}
	return b.String()
}
