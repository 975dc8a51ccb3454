package faults

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/p2p"
)

// TestStrangerLearnsNoPrivateBlob: a stranger runs syncnode's DHT beside a
// phone and a server that share a private group and a public one. Blobs of
// the private group are stored, fetched and held, yet the stranger finds
// no provider for them, in its own records or by asking; the public
// group's blob is announced as before (so the stranger would see one).
func TestStrangerLearnsNoPrivateBlob(t *testing.T) {
	t.Parallel()
	phone, server := nodetest.Start(t), nodetest.Start(t)
	cfg := p2p.DefaultHostConfig()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	sh, err := p2p.NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	d, err := p2p.NewDHT(sh, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, n := range []*node.Node{phone, server} {
		if err := sh.Connect(t.Context(), n.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	private := nodetest.CreateGroup(t, phone, "private", syncnode.Normal)
	spec, err := phone.CreateGroup("public", []string{"public/"}, false, syncnode.Normal)
	if err != nil {
		t.Fatal(err)
	}
	public := spec.ID
	nodetest.Join(t, phone, server, private, syncnode.Server)
	nodetest.Join(t, phone, server, public, syncnode.Server)

	var secret []syncnode.BlobRef
	for i := range 3 {
		secret = append(secret, nodetest.PutBlobRow(t, phone, private, "private/"+string(rune('a'+i)), testkit.RandomBytes(32<<10, uint64(40+i))))
	}
	open := nodetest.PutBlobRow(t, phone, public, "public/a", testkit.RandomBytes(32<<10, 50))
	testkit.WaitFor(t, 20*time.Second, "the server holding every blob", func() bool {
		for _, ref := range append(secret, open) {
			if !server.HasBlob(ref) {
				return false
			}
		}
		return true
	})
	providers := func(h host.Host, ref syncnode.BlobRef) int {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		ps, _ := d.FindProviders(ctx, ref, 8)
		return len(ps)
	}
	testkit.WaitFor(t, 20*time.Second, "the public blob's provider record", func() bool { return providers(sh, open) > 0 })
	for _, ref := range secret {
		if n := providers(sh, ref); n != 0 {
			t.Fatalf("a stranger on the DHT finds %d providers of a private group's blob %s", n, ref)
		}
	}
}
