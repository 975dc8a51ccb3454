package p2p

import (
	"context"
	"fmt"
	"log/slog"

	ds "github.com/ipfs/go-datastore"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
)

// DHT is syncnode's private Kademlia DHT: provider records for the blobs
// each node holds, found by blob ref.
type DHT struct {
	h   host.Host
	d   *dht.IpfsDHT
	log *slog.Logger
}

// NewDHT starts the private DHT on h, in server mode, with opts added to
// DHTOptions (for example dht.Mode(dht.ModeClient) for a node that only
// looks things up).
func NewDHT(h host.Host, log *slog.Logger, opts ...dht.Option) (*DHT, error) {
	d, err := dht.New(h, append(DHTOptions(), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("p2p: dht: %w", err)
	}
	return &DHT{h: h, d: d, log: log}, nil
}

// DHTStore keeps the DHT's records (providers of blobs, its own and
// other nodes') in store instead of in memory.
func DHTStore(store ds.Batching) dht.Option { return dht.Datastore(store) }

// Close stops the DHT.
func (d *DHT) Close() error { return d.d.Close() }

// RoutingTableSize returns how many peers the routing table holds.
func (d *DHT) RoutingTableSize() int { return d.d.RoutingTable().Size() }

// Provide announces that this node holds ref.
func (d *DHT) Provide(ctx context.Context, ref syncnode.BlobRef) error {
	if err := d.d.Provide(ctx, ref.CID(), true); err != nil {
		return fmt.Errorf("p2p: provide %s: %w", ref, err)
	}
	return nil
}

// FindProviders returns up to max peers (other than this one) that announced
// ref, with their addresses.
func (d *DHT) FindProviders(ctx context.Context, ref syncnode.BlobRef, max int) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for ai := range d.d.FindProvidersAsync(ctx, ref.CID(), max+1) {
		if ai.ID != d.h.ID() && len(out) < max {
			out = append(out, ai)
		}
	}
	if err := ctx.Err(); err != nil && len(out) == 0 {
		return nil, fmt.Errorf("p2p: find providers of %s: %w", ref, err)
	}
	return out, nil
}
