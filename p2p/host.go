package p2p

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p"
	coreconnmgr "github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode/internal/atomicfile"
)

// Security names a connection security protocol.
type Security string

// Security protocols a host can be built with.
const (
	SecurityTLS   Security = "tls"
	SecurityNoise Security = "noise"
)

// HostConfig configures a libp2p host. Its zero value is the documented
// defaults: NewHost gives every zero field its default (DefaultHostConfig
// returns them, for callers that build on them), and Validate rejects what
// cannot work.
type HostConfig struct {
	// IdentityFile holds the host's private key, created on first start.
	// Empty means a fresh key each start.
	IdentityFile string
	// ListenAddrs are the multiaddrs to listen on (default: TCP and QUIC on
	// 127.0.0.1, ports chosen by the system).
	ListenAddrs []string
	// Security is the preferred security protocol (default TLS: it moved
	// bulk data faster than Noise here); the other is offered too.
	Security Security
	// ConnLow and ConnHigh are the connection manager's watermarks
	// (defaults 64 and 192): above ConnHigh it trims back to ConnLow.
	ConnLow, ConnHigh int
	// Gater, if not nil, decides which connections are allowed (see
	// connmgr.ConnectionGater); nil allows all.
	Gater coreconnmgr.ConnectionGater
	// AddrsFactory, if not nil, rewrites the addresses the host announces
	// (for example adding the public addresses peers observed it at).
	AddrsFactory func([]ma.Multiaddr) []ma.Multiaddr
	// RelayCandidates, if not nil, yields the relays the host may hold
	// reservations with when AutoNAT finds it unreachable from outside
	// (behind a NAT); its relay addresses are then announced.
	RelayCandidates autorelay.PeerSource
}

// DefaultHostConfig returns the defaults.
func DefaultHostConfig() HostConfig {
	return HostConfig{
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"},
		Security:    SecurityTLS,
		ConnLow:     64,
		ConnHigh:    192,
	}
}

// Validate reports a field that cannot work: an unknown security
// protocol, negative watermarks, or ConnLow above ConnHigh.
func (c HostConfig) Validate() error {
	switch {
	case c.Security != "" && c.Security != SecurityTLS && c.Security != SecurityNoise:
		return fmt.Errorf("%w: security %q: want tls or noise", ErrConfig, c.Security)
	case c.ConnLow < 0, c.ConnHigh < 0:
		return fmt.Errorf("%w: connection watermarks %d, %d must not be negative", ErrConfig, c.ConnLow, c.ConnHigh)
	case c.ConnHigh != 0 && c.ConnLow > c.ConnHigh:
		return fmt.Errorf("%w: ConnLow %d above ConnHigh %d", ErrConfig, c.ConnLow, c.ConnHigh)
	}
	return nil
}

// withDefaults returns c with every zero field set to its default.
func (c HostConfig) withDefaults() HostConfig {
	d := DefaultHostConfig()
	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = d.ListenAddrs
	}
	if c.Security == "" {
		c.Security = d.Security
	}
	if c.ConnHigh == 0 {
		c.ConnHigh = max(d.ConnHigh, c.ConnLow)
	}
	if c.ConnLow == 0 {
		c.ConnLow = min(d.ConnLow, c.ConnHigh)
	}
	return c
}

// LoadIdentity reads the private key in path, creating an Ed25519 key there
// (mode 0600) if the file does not exist.
func LoadIdentity(path string) (crypto.PrivKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, fmt.Errorf("p2p: identity %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("p2p: identity: %w", err)
	}
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("p2p: new identity: %w", err)
	}
	b, err = crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("p2p: new identity: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("p2p: identity: %w", err)
	}
	// Durable before it is used: a node that came back from a power cut
	// with another identity would be no member of its groups.
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("p2p: identity: %w", err)
	}
	return k, nil
}

// NewHost builds a libp2p host: TCP and QUIC, TLS and Noise, the connection
// manager's watermarks and resource limits set on purpose, and the NAT
// traversal kit: the relay transport (to dial and accept through circuit
// relays), AutoNAT (learning its own reachability, and answering others'
// dial-back requests), DCUtR hole punching, and, with RelayCandidates,
// relay reservations while it is unreachable. Zero fields of cfg take
// their defaults, and a cfg that Validate refuses is an error.
func NewHost(cfg HostConfig) (host.Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var key crypto.PrivKey
	var err error
	if cfg.IdentityFile != "" {
		key, err = LoadIdentity(cfg.IdentityFile)
	} else {
		key, _, err = crypto.GenerateEd25519Key(rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(cfg.ConnLow, cfg.ConnHigh)
	if err != nil {
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits()))
	if err != nil {
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}
	tlsOpt := libp2p.Security(libp2ptls.ID, libp2ptls.New)
	noiseOpt := libp2p.Security(noise.ID, noise.New)
	sec := []libp2p.Option{tlsOpt, noiseOpt}
	if cfg.Security == SecurityNoise {
		sec = []libp2p.Option{noiseOpt, tlsOpt}
	}
	opts := append([]libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(cfg.ListenAddrs...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.ConnectionManager(cm),
		libp2p.ResourceManager(rm),
		libp2p.EnableRelay(),
		libp2p.EnableHolePunching(),
		libp2p.EnableNATService(),
		// A device behind a NAT asks its few servers again and again
		// until it knows: libp2p's 3 per peer per minute made it wait.
		libp2p.AutoNATServiceRateLimit(60, 10, time.Minute),
		libp2p.UserAgent("syncnode"),
	}, sec...)
	if cfg.AddrsFactory != nil {
		opts = append(opts, libp2p.AddrsFactory(cfg.AddrsFactory))
	}
	if cfg.RelayCandidates != nil {
		opts = append(opts, libp2p.EnableAutoRelayWithPeerSource(cfg.RelayCandidates,
			// The candidates are a few known servers: one is enough, and
			// waiting for more (autorelay's default of minutes) only delays.
			autorelay.WithMinCandidates(1), autorelay.WithNumRelays(2), autorelay.WithBootDelay(0),
			autorelay.WithMinInterval(5*time.Second), autorelay.WithBackoff(time.Minute)))
	}
	if cfg.Gater != nil {
		opts = append(opts, libp2p.ConnectionGater(cfg.Gater))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("p2p: host: %w", err)
	}
	live := newLiveness()
	h.Network().Notify(&network.NotifyBundle{
		DisconnectedF: func(_ network.Network, c network.Conn) { live.forget(c) },
	})
	return &Host{Host: h, live: live}, nil
}

// Host is a libp2p host that keeps what Exchange learns of its
// connections' life, shared by every request: one probe per connection
// at a time, none on a connection that is bringing bytes.
type Host struct {
	host.Host
	live *liveness
}

// limits are libp2p's scaled defaults with each syncnode protocol's
// stream limits taken from the protocol table (see Protocols).
func limits() rcmgr.ConcreteLimitConfig {
	scaled := rcmgr.DefaultLimits
	var perPeer, total int
	for _, p := range protocols {
		scaled.AddProtocolPeerLimit(p.ID, rcmgr.BaseLimit{
			Streams: 2 * p.PerPeer, StreamsInbound: p.PerPeer, StreamsOutbound: p.PerPeer,
			Memory: 256 << 20,
		}, rcmgr.BaseLimitIncrease{})
		scaled.AddProtocolLimit(p.ID, rcmgr.BaseLimit{
			Streams: 2 * p.Total, StreamsInbound: p.Total, StreamsOutbound: p.Total,
			Memory: 1 << 30,
		}, rcmgr.BaseLimitIncrease{})
		perPeer, total = max(perPeer, p.PerPeer), max(total, p.Total)
	}
	lim := scaled.AutoScale()
	// Per-peer and per-protocol limits only help if the peer's own default
	// leaves room for them: two protocols' worth.
	p := lim.ToPartialLimitConfig()
	p.PeerDefault.Streams = rcmgr.LimitVal(4 * perPeer)
	p.PeerDefault.StreamsInbound = rcmgr.LimitVal(2 * perPeer)
	p.PeerDefault.StreamsOutbound = rcmgr.LimitVal(2 * perPeer)
	// A stream is "transient" until its protocol is negotiated. libp2p's
	// default allows 128 such inbound streams for the whole host, so a
	// burst of fetches from a few members, on a busy machine, had streams
	// reset before any syncnode limit applied (1000 fetches from 10
	// members: 267 reset). The per-protocol and per-peer limits above
	// bound them once negotiated.
	p.Transient.StreamsInbound = rcmgr.LimitVal(2 * total)
	p.Transient.Streams = rcmgr.LimitVal(3 * total)
	return p.Build(lim)
}
