package node_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
)

// TestNoLedgerOrHostHandedOut: no method of Node returns the share
// ledger, the libp2p host or anything else of package ownership's or
// libp2p's that could change them, and the Config field through which
// the test harnesses get them has a type no application can name.
func TestNoLedgerOrHostHandedOut(t *testing.T) {
	forbidden := func(ty reflect.Type) bool {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice || ty.Kind() == reflect.Map {
			ty = ty.Elem()
		}
		p := ty.PkgPath()
		return p == "github.com/syncnode/syncnode/ownership" && ty.Name() == "Ledger" ||
			strings.HasPrefix(p, "github.com/libp2p/go-libp2p/core/host") ||
			strings.HasPrefix(p, "github.com/libp2p/go-libp2p/core/network") ||
			strings.HasPrefix(p, "github.com/libp2p/go-libp2p/core/peerstore")
	}
	nt := reflect.TypeFor[*node.Node]()
	for i := range nt.NumMethod() {
		m := nt.Method(i)
		for j := range m.Type.NumOut() {
			if out := m.Type.Out(j); forbidden(out) {
				t.Errorf("Node.%s returns %s", m.Name, out)
			}
		}
	}
	ct := reflect.TypeFor[node.Config]()
	for i := range ct.NumField() {
		f := ct.Field(i)
		ty := f.Type
		for ty.Kind() == reflect.Pointer {
			ty = ty.Elem()
		}
		if f.Name == "Access" && !strings.Contains(ty.PkgPath(), "/internal/") {
			t.Errorf("Config.Access is a %s, which applications can name", f.Type)
		}
	}
}

// TestPeersListsConnections: what the control API shows of the peers
// (connections, their addresses, relayed or not) comes from Node.Peers.
func TestPeersListsConnections(t *testing.T) {
	a, b := nodetest.Start(t), nodetest.Start(t)
	g := nodetest.CreateGroup(t, a, "photos", syncnode.Normal)
	nodetest.Join(t, a, b, g, syncnode.Normal)
	testkit.WaitFor(t, 10*time.Second, "b among a's peers", func() bool {
		for _, p := range a.Peers() {
			if p.ID == b.ID() && len(p.Conns) > 0 {
				for _, c := range p.Conns {
					if c.Relayed || c.Remote == nil {
						t.Fatalf("connection to b: %+v", c)
					}
				}
				return true
			}
		}
		return false
	})
}
