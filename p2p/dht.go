package p2p

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

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

// ProvideAll announces every ref that each yields, with workers at once,
// and reports how many announcements failed. Use it to re-provide a whole
// store on a schedule.
func (d *DHT) ProvideAll(ctx context.Context, each func(func(syncnode.BlobRef) bool) error, workers int) (provided, failed int, err error) {
	refs := make(chan syncnode.BlobRef)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ref := range refs {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				perr := d.Provide(cctx, ref)
				cancel()
				mu.Lock()
				if perr != nil {
					failed++
					d.log.Debug("provide failed", "blob", ref, "err", perr)
				} else {
					provided++
				}
				mu.Unlock()
			}
		}()
	}
	err = each(func(ref syncnode.BlobRef) bool {
		select {
		case refs <- ref:
			return true
		case <-ctx.Done():
			return false
		}
	})
	close(refs)
	wg.Wait()
	if err == nil {
		err = ctx.Err()
	}
	return provided, failed, err
}
