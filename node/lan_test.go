package node

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/syncgroup"
)

// TestLANDiscoveryOnByDefault: a Config whose only field is its data
// directory runs LAN discovery, as the daemon does unless `init -no-lan`:
// a join with no address of the admin looks for it on the LAN. NoLAN turns
// that off, and the join fails at once for want of an address.
func TestLANDiscoveryOnByDefault(t *testing.T) {
	adminKey, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, noLAN := range []bool{false, true} {
		n, err := Open(Config{DataDir: t.TempDir(), NoLAN: noLAN, IOTimeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		inv, err := syncgroup.Invite(adminKey, "g", n.ID(), syncnode.Normal, time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		_, err = n.JoinGroup(t.Context(), inv)
		n.Close()
		if onLAN := err != nil && strings.Contains(err.Error(), "on the LAN"); onLAN == noLAN {
			t.Errorf("NoLAN %v: the join with no address returned %v; looked on the LAN: %v", noLAN, err, onLAN)
		}
	}
}
