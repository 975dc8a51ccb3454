package blobproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/syncnode/syncnode/p2p"
)

// ErrRelayRefused reports a holder reachable only through a relay when
// the client's RelayPolicy is RelayRefuse.
var ErrRelayRefused = errors.New("blobproto: holder reachable only through a relay, and relayed transfers are refused by setting")

// validPolicy reports whether p names a relay policy.
func validPolicy(p p2p.RelayPolicy) bool {
	_, err := p2p.ParseRelayPolicy(string(p))
	return err == nil
}

// directStream returns a stream to p on a direct connection if there is
// one, or one appears within wait (hole punching upgrades a relayed
// connection within a round trip or two); otherwise the stream st already
// open, on a relayed connection.
func (c *Client) directStream(ctx context.Context, p peer.ID, st network.Stream, wait time.Duration) (network.Stream, error) {
	deadline := time.Now().Add(wait)
	punched := false
	if c.cfg.Punch != nil && !c.direct(p) {
		// The relayed stream goes with the connection the punch closes.
		st.Reset()
		c.cfg.Punch(ctx, p)
		punched = true
	}
	for {
		for _, conn := range c.h.Network().ConnsToPeer(p) {
			if _, relayed := p2p.RelayOf(conn); !relayed {
				st.Reset()
				return c.h.NewStream(ctx, p, st.Protocol())
			}
		}
		if !time.Now().Before(deadline) {
			if punched {
				// Across a relay after all, on a stream of its own.
				return c.h.NewStream(network.WithAllowLimitedConn(ctx, "blob across a relay"), p, st.Protocol())
			}
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

// direct reports whether this node has a direct connection to p.
func (c *Client) direct(p peer.ID) bool {
	for _, conn := range c.h.Network().ConnsToPeer(p) {
		if _, relayed := p2p.RelayOf(conn); !relayed {
			return true
		}
	}
	return false
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

// DescribeRoute says how the parts of a fetch that met a relay went: what
// came from which holder through which relay, paced or not, or that the
// policy refused it; "" if no part met a relay. name renders a peer.
func DescribeRoute(res FetchResult, err error, policy p2p.RelayPolicy, rate int64, name func(peer.ID) string) string {
	var parts []string
	for holder, relay := range res.Relayed {
		how := ""
		switch policy {
		case p2p.RelayRefuse:
			how = "refused by setting (relayed: refuse)"
		case p2p.RelayThrottle:
			how = fmt.Sprintf("%d bytes, throttled to %d bytes/s (relayed: throttle)", res.BytesBy[holder], rate)
		default:
			how = fmt.Sprintf("%d bytes, unthrottled (relayed: allow)", res.BytesBy[holder])
		}
		parts = append(parts, fmt.Sprintf("from %s through relay %s: %s", name(holder), name(relay), how))
	}
	if len(parts) == 0 {
		return ""
	}
	slices.Sort(parts)
	route := strings.Join(parts, "; ")
	if err != nil {
		route += " — fetch failed"
	}
	return route
}
