package p2p

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// ErrConfig reports a setting that cannot work, such as an unknown relay
// policy.
var ErrConfig = errors.New("p2p: invalid config")

// RelayPolicy says what a blob fetch does with a holder it reaches only
// through a circuit relay: the relay is some server's bandwidth, paid
// twice, so by default blob bytes cross it slowly.
type RelayPolicy string

// Relay policies.
const (
	// RelayThrottle reads relayed transfers at a bounded rate (the blob
	// client's RelayRate).
	RelayThrottle RelayPolicy = "throttle"
	// RelayAllow reads relayed transfers as fast as they come.
	RelayAllow RelayPolicy = "allow"
	// RelayRefuse fails a transfer that would cross a relay.
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
