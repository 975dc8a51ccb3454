package featuretests

import (
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/node"
)

// Devices have names: each writes its own into its membership, every
// member sees it beside the peer ID, and why names the holders.
func TestDeviceNamesTravelWithMembership(t *testing.T) {
	t.Parallel()
	named := func(name string) func(*node.Config) { return func(c *node.Config) { c.Name = name } }
	phone, laptop := start(t, named("phone")), start(t, named("laptop"))
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, laptop, g, syncnode.Normal)
	waitFor(t, 10*time.Second, "both names at both members", func() bool {
		for _, n := range []*node.Node{phone, laptop} {
			names := map[string]bool{}
			for _, m := range n.Members(g) {
				names[m.Name] = true
			}
			if !names["phone"] || !names["laptop"] {
				return false
			}
		}
		return true
	})
	if got := laptop.NameOf(phone.ID()); got != "phone" {
		t.Fatalf("laptop names the phone %q", got)
	}
	ref := putBlobRow(t, phone, g, "photos/a", randomBytes(1<<10, 1))
	waitFor(t, 10*time.Second, "the phone named as the holder in why", func() bool {
		w, err := laptop.Why(ref)
		if err != nil {
			return false
		}
		for _, l := range w.Locations {
			if l.Peer == phone.ID().String() && l.Name == "phone" {
				return true
			}
		}
		return false
	})
}

// A member is online while connected; once its last connection ends, the
// others know when they last saw it.
func TestMembersOnlineThenLastSeen(t *testing.T) {
	t.Parallel()
	phone, laptop := start(t), start(t)
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, laptop, g, syncnode.Normal)
	if online, _ := phone.Seen(laptop.ID()); !online {
		t.Fatal("the laptop, just joined, is not online at the phone")
	}
	before := time.Now()
	laptop.Close()
	waitFor(t, 10*time.Second, "the laptop last seen", func() bool {
		online, last := phone.Seen(laptop.ID())
		return !online && !last.Before(before)
	})
}
