package p2p

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"
)

// RelayPolicy says what a fetch does with a holder it reaches only
// through a circuit relay: the relay is some server's bandwidth, paid
// twice, so by default blob bytes cross it slowly.
type RelayPolicy string

// Relay policies.
const (
	// RelayThrottle reads relayed transfers at ClientConfig.RelayRate.
	RelayThrottle RelayPolicy = "throttle"
	// RelayAllow reads relayed transfers as fast as they come.
	RelayAllow RelayPolicy = "allow"
	// RelayRefuse fails a transfer that would cross a relay, with
	// ErrRelayRefused.
	RelayRefuse RelayPolicy = "refuse"
)

// ParseRelayPolicy parses a policy's name.
func ParseRelayPolicy(s string) (RelayPolicy, error) {
	switch p := RelayPolicy(s); p {
	case RelayThrottle, RelayAllow, RelayRefuse:
		return p, nil
	}
	return "", fmt.Errorf("%w: relay policy %q: want throttle, allow or refuse", ErrConfig, s)
}

// ErrRelayRefused reports a holder reachable only through a relay when
// the client's RelayPolicy is RelayRefuse.
var ErrRelayRefused = errors.New("p2p: holder reachable only through a relay, and relayed transfers are refused by setting")

// RelayOf reports whether c runs through a circuit relay, and the relay's
// peer ID.
func RelayOf(c network.Conn) (peer.ID, bool) {
	return RelayOfAddr(c.RemoteMultiaddr())
}

// RelayOfAddr reports whether a is a circuit relay address
// (/…/p2p/RELAY/p2p-circuit), and the relay's peer ID ("" for a bare
// /p2p-circuit that names none).
func RelayOfAddr(a ma.Multiaddr) (peer.ID, bool) {
	var relay peer.ID
	circuit := false
	ma.ForEach(a, func(c ma.Component) bool {
		switch c.Protocol().Code {
		case ma.P_P2P:
			if !circuit {
				relay, _ = peer.IDFromBytes(c.RawValue())
			}
		case ma.P_CIRCUIT:
			circuit = true
			return false
		}
		return true
	})
	return relay, circuit
}

// IsRelayAddr reports whether a is a circuit relay address.
func IsRelayAddr(a ma.Multiaddr) bool {
	_, ok := RelayOfAddr(a)
	return ok
}

// directStream returns a stream to p on a direct connection if there is
// one, or one appears within wait (hole punching upgrades a relayed
// connection within a round trip or two); otherwise the stream st already
// open, on a relayed connection.
func (c *Client) directStream(ctx context.Context, p peer.ID, st network.Stream, wait time.Duration) (network.Stream, error) {
	deadline := time.Now().Add(wait)
	for {
		for _, conn := range c.h.Network().ConnsToPeer(p) {
			if _, relayed := RelayOf(conn); !relayed {
				st.Reset()
				return c.h.NewStream(ctx, p, st.Protocol())
			}
		}
		if !time.Now().Before(deadline) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			st.Reset()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// throttled reads r at most at lim's rate.
type throttled struct {
	ctx context.Context
	r   io.Reader
	lim *rate.Limiter
}

func (t *throttled) Read(p []byte) (int, error) {
	if len(p) > t.lim.Burst() {
		p = p[:t.lim.Burst()]
	}
	n, err := t.r.Read(p)
	if n > 0 {
		if werr := t.lim.WaitN(t.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}
