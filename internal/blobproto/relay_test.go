package blobproto

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/p2p"
)

// relayed builds a holder reachable from a fresh client host only through
// a circuit relay, and returns the holder, the client host (connected to
// the holder through the relay) and the relay.
func relayed(t *testing.T) (*holder, host.Host, host.Host) {
	t.Helper()
	r := newHost(t, "")
	res := relayv2.DefaultResources()
	res.Limit = nil
	rl, err := relayv2.New(r, relayv2.WithResources(res))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rl.Close() })
	a := newHolder(t, diskStore(t, t.TempDir()))
	b := newHost(t, "")
	ctx := context.Background()
	rinfo := peer.AddrInfo{ID: r.ID(), Addrs: r.Addrs()}
	if err := a.h.Connect(ctx, rinfo); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reserve(ctx, a.h, rinfo); err != nil {
		t.Fatal(err)
	}
	if err := b.Connect(ctx, rinfo); err != nil {
		t.Fatal(err)
	}
	circuit := ma.StringCast(r.Addrs()[0].String() + "/p2p/" + r.ID().String() + "/p2p-circuit")
	b.Peerstore().AddAddr(a.h.ID(), circuit, peerstore.PermanentAddrTTL)
	if err := b.Connect(ctx, peer.AddrInfo{ID: a.h.ID()}); err != nil {
		t.Fatal(err)
	}
	for _, c := range b.Network().ConnsToPeer(a.h.ID()) {
		if via, ok := p2p.RelayOf(c); !ok || via != r.ID() {
			t.Fatalf("connection to the holder is not through the relay: %s", c.RemoteMultiaddr())
		}
	}
	return a, b, r
}

func relayClient(t *testing.T, b host.Host, policy p2p.RelayPolicy, rate int64, wait time.Duration) *Client {
	cfg := ClientConfig{}
	cfg.IOTimeout, cfg.RetryDelay = 5*time.Second, 20*time.Millisecond
	cfg.Relayed, cfg.RelayRate, cfg.DirectWait = policy, rate, wait
	return mustClient(t, b, diskStore(t, t.TempDir()), cfg)
}

// Under RelayRefuse a holder reachable only through a relay is not
// fetched from: the error says why, and nothing is stored.
func TestRelayedTransferRefused(t *testing.T) {
	a, b, r := relayed(t)
	ref := put(t, a.store, testkit.RandomBytes(1<<20, 1))
	c := relayClient(t, b, p2p.RelayRefuse, 0, 50*time.Millisecond)
	res, err := c.Fetch(context.Background(), ref, []peer.ID{a.h.ID()}, nil)
	if !errors.Is(err, ErrRelayRefused) {
		t.Fatalf("fetch through a relay under refuse: %v", err)
	}
	if res.Relayed[a.h.ID()] != r.ID() {
		t.Fatalf("the result does not name the relay: %v", res.Relayed)
	}
	if _, err := c.store.Stat(ref); err == nil {
		t.Fatal("the refused blob is stored")
	}
}

// Under RelayThrottle relayed bytes arrive at RelayRate; under RelayAllow
// as fast as they come.
func TestRelayedTransferThrottled(t *testing.T) {
	a, b, r := relayed(t)
	const size, rate = 3 << 19, 1 << 19 // 1.5 MiB at 512 KiB/s
	data := testkit.RandomBytes(size, 2)
	ref := put(t, a.store, data)

	c := relayClient(t, b, p2p.RelayThrottle, rate, 10*time.Millisecond)
	start := time.Now()
	res, err := c.Fetch(context.Background(), ref, []peer.ID{a.h.ID()}, nil)
	throttled := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if res.Relayed[a.h.ID()] != r.ID() {
		t.Fatalf("the result does not name the relay: %v", res.Relayed)
	}
	// The limiter's burst (256 KiB) comes at once; the rest at rate.
	floor := time.Duration(float64(size-256<<10) / rate * float64(time.Second))
	if throttled < floor {
		t.Fatalf("%d bytes throttled to %d B/s took %v, under %v", size, rate, throttled, floor)
	}

	free := relayClient(t, b, p2p.RelayAllow, rate, 10*time.Millisecond)
	start = time.Now()
	if _, err := free.Fetch(context.Background(), ref, []peer.ID{a.h.ID()}, nil); err != nil {
		t.Fatal(err)
	}
	allowed := time.Since(start)
	// Faster than the throttle would let it be: under a loaded machine
	// (and -race) the unthrottled fetch of 1.5 MiB can take a second,
	// half the floor.
	if allowed >= floor {
		t.Fatalf("unthrottled relayed fetch took %v, no faster than the throttle's floor %v (throttled %v)", allowed, floor, throttled)
	}
	if got := content(t, free.store, ref); string(got) != string(data) {
		t.Fatal("relayed copy differs")
	}
	t.Logf("1.5 MiB through a relay: throttled to 512 KiB/s %v, allowed %v", throttled.Round(time.Millisecond), allowed.Round(time.Millisecond))
}

// A direct connection that appears while a fetch waits (as hole punching
// opens one) carries the transfer, even under RelayRefuse.
func TestDirectConnectionPreferredOverRelay(t *testing.T) {
	a, b, _ := relayed(t)
	ref := put(t, a.store, testkit.RandomBytes(1<<20, 3))
	go func() {
		time.Sleep(100 * time.Millisecond)
		ctx := network.WithForceDirectDial(context.Background(), "the test's direct connection")
		b.Connect(ctx, peer.AddrInfo{ID: a.h.ID(), Addrs: a.h.Addrs()})
	}()
	c := relayClient(t, b, p2p.RelayRefuse, 0, 10*time.Second)
	res, err := c.Fetch(context.Background(), ref, []peer.ID{a.h.ID()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Relayed) != 0 {
		t.Fatalf("the transfer crossed the relay though a direct connection opened: %v", res.Relayed)
	}
}

func TestNonsensePolicyInAConfigIsRefused(t *testing.T) {
	cfg := ClientConfig{Relayed: "sometimes"}
	if err := cfg.Validate(); !errors.Is(err, ErrConfig) {
		t.Fatalf("nonsense policy in a config: %v", err)
	}
}
